"""Attention scores as pure functions over a params dict.

Memory `m [batch, src_len, mem_dim]` (encoder outputs), query
`q [batch, query_dim]` (a decoder state). Scores:

* ``dot``        (Luong 2015):    ``q . m_s``
* ``general``    (Luong 2015):    ``q . (W_a m_s)``
* ``concat``     (Luong 2015):    ``v . tanh(W_a [m_s; q])``, ``W_a`` split into its
  memory and query columns so the memory half is computed once per sentence
* ``additive``   (Bahdanau 2015): ``v . tanh(W_1 m_s + W_2 q + b)``; the decoder
  queries it with its *previous* state, as Bahdanau does, the others with the
  current one (Luong)
* ``scaled_dot`` (Vaswani 2017):  ``q . m_s / sqrt(mem_dim)``

Everything that depends on the memory alone (``prepare_keys``) runs once per
sentence, outside the decoder's scan. Padded source positions get weight 0.
"""

import math

import jax
import jax.numpy as jnp

from seq2seq_jax import ops

ATTENTION_TYPES = ("none", "dot", "general", "concat", "additive", "scaled_dot")

Params = dict[str, jax.Array]


def check_attention(name: str) -> None:
  if name not in ATTENTION_TYPES:
    raise ValueError(f"unknown attention {name!r}; valid attention types: "
                     f"{', '.join(ATTENTION_TYPES)}")


def init(name: str, key: jax.Array, memory_dim: int, query_dim: int,
         attention_dim: int) -> Params:
  """Score parameters for attention `name` (empty for dot products)."""
  check_attention(name)
  glorot = jax.nn.initializers.glorot_uniform()
  k1, k2, k3 = jax.random.split(key, 3)
  if name in ("dot", "scaled_dot"):
    if memory_dim != query_dim:
      raise ValueError(f"attention {name!r} needs memory_dim == query_dim, got "
                       f"{memory_dim} and {query_dim}")
    return {}
  if name == "general":
    return {"w_a": glorot(k1, (memory_dim, query_dim), jnp.float32)}
  if name in ("concat", "additive"):
    params = {
        "w_memory": glorot(k1, (memory_dim, attention_dim), jnp.float32),
        "w_query": glorot(k2, (query_dim, attention_dim), jnp.float32),
        "v": jax.random.uniform(k3, (attention_dim,), jnp.float32, -1.0, 1.0)
        / math.sqrt(attention_dim),
    }
    if name == "additive":
      params["b"] = jnp.zeros((attention_dim,), jnp.float32)
    return params
  return {}


def prepare_keys(name: str, params: Params, memory: jax.Array) -> jax.Array:
  """The memory-only part of the score, `[batch, src_len, key_dim]`."""
  if name in ("dot", "scaled_dot"):
    return memory
  if name == "general":
    return ops.matmul(memory, params["w_a"])
  if name in ("concat", "additive"):
    keys = ops.matmul(memory, params["w_memory"])
    return keys + params["b"] if name == "additive" else keys
  raise ValueError(f"attention {name!r} has no keys")


def scores(name: str, params: Params, keys: jax.Array, queries: jax.Array) -> jax.Array:
  """Unnormalised scores `[batch, tgt_len, src_len]` of `queries [batch, tgt_len, query_dim]`."""
  if name in ("dot", "general", "scaled_dot"):
    out = ops.einsum("btd,bsd->bts", queries, keys)
    return out / math.sqrt(keys.shape[-1]) if name == "scaled_dot" else out
  if name in ("concat", "additive"):
    q = ops.matmul(queries, params["w_query"])
    hidden = jnp.tanh(keys[:, None, :, :] + q[:, :, None, :].astype(keys.dtype))
    return ops.matmul(hidden, params["v"])
  raise ValueError(f"attention {name!r} has no score")


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis (source positions); exactly 0 where `mask` is False."""
  scores = ops.widen(scores)
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  scores = scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
  weights = jnp.where(mask, jnp.exp(scores), 0.0)
  # A row with no real position (an all-padding batch row) gets all zeros.
  return weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-30)


def attend_all(name: str, params: Params, keys: jax.Array, memory: jax.Array,
               mask: jax.Array, queries: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Attention of several queries at once, as batched matmuls.

  Args:
    name: the score.
    params: its parameters.
    keys: `prepare_keys(name, params, memory)`.
    memory: `[batch, src_len, mem_dim]`.
    mask: `[batch, src_len]`, True on real source tokens.
    queries: `[batch, tgt_len, query_dim]`.

  Returns:
    context `[batch, tgt_len, mem_dim]` and weights `[batch, tgt_len, src_len]`.
  """
  weights = masked_softmax(scores(name, params, keys, queries), mask[:, None, :])
  return ops.einsum("bts,bsd->btd", weights, memory), weights


def attend(name: str, params: Params, keys: jax.Array, memory: jax.Array,
           mask: jax.Array, query: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One query a sentence: context `[batch, mem_dim]`, weights `[batch, src_len]`."""
  context, weights = attend_all(name, params, keys, memory, mask, query[:, None, :])
  return context[:, 0], weights[:, 0]
