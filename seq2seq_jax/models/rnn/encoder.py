"""The RNN encoder: embeddings, then (optionally bidirectional) recurrent layers."""

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.models.rnn import cells
from seq2seq_jax.models.rnn.config import RNNConfig
from seq2seq_jax.models.rnn.layers import cast, dropout_scale, embed_init, state_dtype
from seq2seq_jax.tokens import PAD_ID


class EncoderOutput(NamedTuple):
  memory: jax.Array  # [batch, src_len, hidden]
  mask: jax.Array  # [batch, src_len] bool, True on real tokens
  final: tuple  # per layer, the carry after each sentence's last token


def reverse_within_length(tokens: jax.Array, lengths: jax.Array) -> jax.Array:
  """Reverses each row's first `lengths[b]` tokens, leaving the padding in place."""
  t = jnp.arange(tokens.shape[1])[None, :]
  idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
  return jnp.take_along_axis(tokens, idx, axis=1)


class Encoder(nn.Module):
  """Embeddings, then `config.num_layers` recurrent layers.

  A bidirectional layer has `hidden_dim // 2` units per direction, so its
  outputs and its final state have `hidden_dim` units like a unidirectional
  one (as in OpenNMT's `brnn`).
  """
  config: RNNConfig

  def setup(self):
    cfg = self.config
    cell = cells.CELLS[cfg.cell]
    self.embedding = self.param("embedding", embed_init, (cfg.src_vocab_size, cfg.embed_dim))
    layers = []
    for layer in range(cfg.num_layers):
      in_dim = cfg.embed_dim if layer == 0 else cfg.hidden_dim
      init = functools.partial(cell.init, input_dim=in_dim, hidden_dim=cfg.encoder_unit)
      dirs = {"fwd": self.param(f"layer{layer}_fwd", lambda k, f=init: f(k))}
      if cfg.bidirectional:
        dirs["bwd"] = self.param(f"layer{layer}_bwd", lambda k, f=init: f(k))
      layers.append(dirs)
    self.layers = layers

  def __call__(self, src: jax.Array, train: bool = False) -> EncoderOutput:
    """Encodes `src [batch, src_len]`."""
    cfg = self.config
    cell = cells.CELLS[cfg.cell]
    dtype = cfg.compute_dtype
    mask = src != PAD_ID
    if cfg.reverse_source:
      src = reverse_within_length(src, jnp.sum(mask, axis=1))
    batch, _ = src.shape
    x = jnp.take(self.embedding, src.T, axis=0).astype(dtype)  # [S, B, E]
    mask_t = mask.T
    use_dropout = train and cfg.dropout > 0
    if use_dropout:
      x = x * dropout_scale(self.make_rng("dropout"), x.shape, cfg.dropout, x.dtype)
    finals = []
    for layer, dirs in enumerate(self.layers):
      carry0 = cell.initial_carry(batch, cfg.encoder_unit, state_dtype(dtype))
      carry, hs = cells.scan_cell(cell, cast(dirs["fwd"], dtype), carry0, x, mask_t,
                                  unroll=cfg.unroll)
      if cfg.bidirectional:
        carry_b, hs_b = cells.scan_cell(cell, cast(dirs["bwd"], dtype), carry0, x, mask_t,
                                        reverse=True, unroll=cfg.unroll)
        carry = jax.tree.map(lambda a, b: jnp.concatenate([a, b], -1), carry, carry_b)
        hs = jnp.concatenate([hs, hs_b], -1)
      finals.append(carry)
      x = hs.astype(dtype)
      if use_dropout and layer < cfg.num_layers - 1:
        x = x * dropout_scale(self.make_rng("dropout"), x.shape, cfg.dropout, x.dtype)
    return EncoderOutput(memory=jnp.swapaxes(x, 0, 1), mask=mask, final=tuple(finals))
