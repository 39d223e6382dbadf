"""The Transformer's layers: multi-head attention, the feed-forward block, an
encoder layer and a decoder layer (post- or pre-norm), and sinusoidal positions.

Shapes: `d` is `d_model`, `h` heads of `dh = d // h` units. Keys and values are
kept split by head, `[batch, len, h, dh]`, which is also the decoder cache's layout.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.models.transformer.config import TransformerConfig

# A masked score: exp(-1e9 - max) is exactly 0 in float32, and a row with no
# real key at all (a bucket's filler sentence) gets uniform weights, not NaN.
MASKED_SCORE = -1e9


def sinusoidal_positions(positions: jax.Array, d: int) -> jax.Array:
  """`PE(pos, 2i) = sin(pos / 10000^(2i/d))`, `PE(pos, 2i+1) = cos(...)`: `[..., d]` float32."""
  inv = jnp.exp(-math.log(10000.0) * jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  angles = positions.astype(jnp.float32)[..., None] * inv  # [..., d/2]
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], -1).reshape(*positions.shape, d)


def _float32(dtype):
  return jnp.promote_types(dtype, jnp.float32)


def _float32_of(x):
  return x.astype(_float32(x.dtype))


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention over `h` heads with input and output projections."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    dense = lambda: nn.Dense(cfg.d_model, dtype=cfg.compute_dtype,
                             kernel_init=nn.initializers.glorot_uniform())
    self.query, self.key, self.value, self.out = dense(), dense(), dense(), dense()
    self.weights_dropout = nn.Dropout(cfg.attention_dropout)

  def _heads(self, x):
    return x.reshape(*x.shape[:-1], self.config.num_heads, self.config.head_dim)

  def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`x [batch, len, d]` -> keys, values `[batch, len, h, dh]`."""
    return self._heads(self.key(x)), self._heads(self.value(x))

  def __call__(self, x: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Queries from `x [batch, q_len, d]` over `keys`, `values` `[batch, k_len, h, dh]`.

    Args:
      mask: bool, broadcastable to `[batch, h, q_len, k_len]`; False keys get no weight.

    Returns:
      `(out [batch, q_len, d], weights [batch, h, q_len, k_len] float32)`.
    """
    q = self._heads(self.query(x))
    one_query = q.shape[1] == 1  # a decoding step
    if one_query:
      # Multiply and reduce: XLA:CPU reads the cache in its own layout, where
      # a dot_general would transpose every cached key and value at every step
      # (measured: greedy 684 -> 448 ms, beam 5 3167 -> 2021 ms a batch).
      scores = jnp.sum(_float32_of(q[:, 0, None]) * _float32_of(keys), -1)  # [b, k, h]
      scores = jnp.swapaxes(scores, 1, 2)[:, :, None]  # [b, h, 1, k]
    else:
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, keys,
                          preferred_element_type=_float32(q.dtype))
    scores = jnp.where(mask, scores / math.sqrt(self.config.head_dim), MASKED_SCORE)
    weights = jax.nn.softmax(scores, axis=-1)
    dropped = self.weights_dropout(weights, deterministic=not train)
    if one_query:
      w = jnp.swapaxes(dropped[:, :, 0], 1, 2)[..., None].astype(values.dtype)  # [b, k, h, 1]
      context = jnp.sum(_float32_of(w) * _float32_of(values), axis=1)[:, None]
      context = context.astype(values.dtype)
    else:
      context = jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(values.dtype), values)
    return self.out(context.reshape(*context.shape[:2], -1)), weights


class FeedForward(nn.Module):
  """`max(0, x W1 + b1) W2 + b2`, applied at every position."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    init = nn.initializers.glorot_uniform()
    x = nn.relu(nn.Dense(cfg.ff_dim, dtype=cfg.compute_dtype, kernel_init=init,
                         name="linear1")(x))
    return nn.Dense(cfg.d_model, dtype=cfg.compute_dtype, kernel_init=init, name="linear2")(x)


def layer_norm(name: str, cfg: TransformerConfig) -> nn.LayerNorm:
  """PyTorch's LayerNorm (eps 1e-5), computed in float32."""
  return nn.LayerNorm(epsilon=1e-5, dtype=_float32(cfg.compute_dtype), name=name)


class _Residual(nn.Module):
  """Shared by both layer kinds: a sublayer's residual connection and norm."""
  config: TransformerConfig

  def residual(self, x, norm, sublayer, drop, train):
    """Post-norm `LN(x + drop(f(x)))` or pre-norm `x + drop(f(LN(x)))`;
    `sublayer` returns `(y, aux)`, and so does this."""
    if self.config.norm == "pre":
      y, aux = sublayer(norm(x))
      return x + drop(y, deterministic=not train).astype(x.dtype), aux
    y, aux = sublayer(x)
    return norm(x + drop(y, deterministic=not train).astype(x.dtype)), aux


class EncoderLayer(_Residual):
  """Self-attention, then the feed-forward block."""

  def setup(self):
    cfg = self.config
    self.self_attn = MultiHeadAttention(cfg)
    self.ff = FeedForward(cfg)
    self.norm1, self.norm2 = layer_norm("norm1", cfg), layer_norm("norm2", cfg)
    self.drop = nn.Dropout(cfg.dropout)

  def __call__(self, x: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
    """`x [batch, src_len, d]`, `mask [batch, 1, 1, src_len]` (True on real tokens)."""
    def attend(y):
      return self.self_attn(y, *self.self_attn.keys_values(y), mask, train)

    x, _ = self.residual(x, self.norm1, attend, self.drop, train)
    x, _ = self.residual(x, self.norm2, lambda y: (self.ff(y), None), self.drop, train)
    return x


class DecoderLayer(_Residual):
  """Masked self-attention, cross-attention over the encoder output, the feed-forward block."""

  def setup(self):
    cfg = self.config
    self.self_attn = MultiHeadAttention(cfg)
    self.cross_attn = MultiHeadAttention(cfg)
    self.ff = FeedForward(cfg)
    self.norm1, self.norm2, self.norm3 = (layer_norm(f"norm{i}", cfg) for i in (1, 2, 3))
    self.drop = nn.Dropout(cfg.dropout)

  def cross_keys_values(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The cross-attention's keys and values of the encoder output `[batch, src_len, d]`."""
    return self.cross_attn.keys_values(memory)

  def __call__(self, x: jax.Array, self_mask: jax.Array, cross: tuple, cross_mask: jax.Array,
               train: bool = False, cache: tuple | None = None, position=None):
    """One decoder layer over `x [batch, len, d]`.

    Args:
      self_mask: broadcastable to `[batch, h, len, keys]`: causal for the full
        pass, the filled cache slots for a step.
      cross: the cross-attention's `(keys, values)`, see `cross_keys_values`.
      cross_mask: `[batch, 1, 1, src_len]`.
      cache: None for the full pass (self-attention over `x` itself); for one
        step (`len` 1) the `(keys, values)` `[batch, max_len, h, dh]` of the
        earlier steps, to which this step's are written at `position`.

    Returns:
      `(x, cross-attention weights [batch, h, len, src_len], cache)`.
    """
    new_cache = None

    def self_attend(y):
      nonlocal new_cache
      keys, values = self.self_attn.keys_values(y)
      if cache is not None:
        at = (0, position, 0, 0)
        keys = jax.lax.dynamic_update_slice(cache[0], keys.astype(cache[0].dtype), at)
        values = jax.lax.dynamic_update_slice(cache[1], values.astype(cache[1].dtype), at)
        new_cache = (keys, values)
      return self.self_attn(y, keys, values, self_mask, train)

    x, _ = self.residual(x, self.norm1, self_attend, self.drop, train)
    x, weights = self.residual(
        x, self.norm2, lambda y: self.cross_attn(y, *cross, cross_mask, train), self.drop,
        train)
    x, _ = self.residual(x, self.norm3, lambda y: (self.ff(y), None), self.drop, train)
    return x, weights, new_cache
