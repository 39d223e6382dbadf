"""Small pieces the RNN encoder and decoder share: dtypes, dropout, embeddings."""

import jax
import jax.numpy as jnp


def state_dtype(dtype):
  """Carries, attention and logits stay in at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def cast(tree, dtype):
  return jax.tree.map(lambda a: a.astype(dtype), tree)


def dropout_scale(key, shape, rate, dtype):
  """Inverted-dropout multipliers: 0 or 1/(1-rate)."""
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def embed_init(key, shape, dtype=jnp.float32):
  """N(0, 1/embed_dim) embeddings."""
  return jax.random.normal(key, shape, dtype) * (shape[1] ** -0.5)
