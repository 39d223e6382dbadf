"""The Transformer encoder-decoder (`config.model.family="transformer"`), behind
the model interface of `models.interface`.

Training reads the whole target at once under a causal mask; decoding feeds one
token a step through `decode_step`, whose state carries every decoder layer's
self-attention keys and values (the cache) and the position. The cross-attention
keys and values of the encoder output are computed once, in `decoder_start`.

Scheduled sampling (`tf_prob` not None) is the two-pass scheme of Mihaylova &
Liu (2019) / Duckworth et al. (2019): a first teacher-forced pass, without
gradient, predicts every position; then each input token is the gold one with
probability `tf_prob` (a coin per token, as for the RNN) or the first pass's
prediction of it, and the second pass, which is trained, reads that mixture.
Unlike the RNN's scan, a prediction conditions on the gold prefix rather than on
the mixed one (a parallel pass cannot do otherwise).
"""

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax import ops
from seq2seq_jax.models.interface import ForwardOutput, check_batch
from seq2seq_jax.models.transformer.config import TransformerConfig
from seq2seq_jax.models.transformer.layers import (
    DecoderLayer,
    EncoderLayer,
    layer_norm,
    sinusoidal_positions,
)
from seq2seq_jax.tokens import PAD_ID, SOS_ID


class Encoded(NamedTuple):
  memory: jax.Array  # [batch, src_len, d] the encoder's output
  mask: jax.Array  # [batch, src_len] bool, True on real tokens


class Memory(NamedTuple):
  """What every decoder step reads: the cross-attention keys and values of each layer."""
  keys: tuple  # per decoder layer, [batch, src_len, h, dh]
  values: tuple  # per decoder layer, [batch, src_len, h, dh]
  mask: jax.Array  # [batch, src_len] bool


class DecoderState(NamedTuple):
  """The decoder's cache; every leaf has the batch first (beam search reorders rows)."""
  position: jax.Array  # [batch] int32, the position of the next token (the same in all rows)
  keys: tuple  # per decoder layer, [batch, max_len, h, dh]: self-attention keys so far
  values: tuple  # per decoder layer, [batch, max_len, h, dh]


def _embed_init(key, shape, dtype=jnp.float32):
  """N(0, 1/d): times sqrt(d) in the model, unit variance beside the positions."""
  return jax.random.normal(key, shape, dtype) * (shape[1] ** -0.5)


class TransformerSeq2Seq(nn.Module):
  """Vaswani et al. (2017) encoder-decoder; implements `Seq2SeqModel`."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    d = cfg.d_model
    self.src_embedding = self.param(
        "embedding" if cfg.share_embeddings else "src_embedding", _embed_init,
        (cfg.src_vocab_size, d))
    self.tgt_embedding = self.src_embedding if cfg.share_embeddings else self.param(
        "tgt_embedding", _embed_init, (cfg.tgt_vocab_size, d))
    if cfg.positions == "learned":
      self.src_positions = self.param("src_positions", nn.initializers.normal(0.02),
                                      (cfg.max_len, d))
      self.tgt_positions = self.param("tgt_positions", nn.initializers.normal(0.02),
                                      (cfg.max_len, d))
    self.encoder_layers = [EncoderLayer(cfg, name=f"encoder_{i}")
                           for i in range(cfg.encoder_layers)]
    self.decoder_layers = [DecoderLayer(cfg, name=f"decoder_{i}")
                           for i in range(cfg.decoder_layers)]
    if cfg.norm == "pre":  # pre-norm leaves the residual stream unnormalised
      self.encoder_norm = layer_norm("encoder_norm", cfg)
      self.decoder_norm = layer_norm("decoder_norm", cfg)
    if not cfg.tie_output:
      self.out_w = self.param("out_w", nn.initializers.glorot_uniform(),
                              (d, cfg.tgt_vocab_size))
    self.out_b = self.param("out_b", nn.initializers.zeros, (cfg.tgt_vocab_size,))
    self.embed_dropout = nn.Dropout(cfg.dropout)

  @property
  def has_attention(self) -> bool:
    return True

  def _embed(self, table, positions_table, tokens, positions, train):
    """`tokens` embedded, times sqrt(d), plus positions, with dropout: `[..., d]`."""
    cfg = self.config
    x = jnp.take(table, tokens, axis=0) * math.sqrt(cfg.d_model)
    if cfg.positions == "learned":
      x = x + jnp.take(positions_table, positions, axis=0, mode="clip")
    else:
      x = x + sinusoidal_positions(positions, cfg.d_model)
    # The residual stream stays float32; the layers' matmuls run in the compute dtype.
    return self.embed_dropout(x, deterministic=not train)

  def _check_length(self, length: int, what: str) -> None:
    """Learned positions exist up to `max_len` only (a static check, at trace time)."""
    cfg = self.config
    if cfg.positions == "learned" and length > cfg.max_len:
      raise ValueError(f"{what} of {length} tokens, but learned positions cover "
                       f"model.max_len={cfg.max_len}: raise model.max_len (or drop long pairs "
                       f"with dataset.max_src_len / max_tgt_len, or decode shorter outputs)")

  # ----- the model interface -----

  def encode(self, src: jax.Array, train: bool = False) -> Encoded:
    """`src [batch, src_len]` -> the encoder output `[batch, src_len, d]` and mask."""
    self._check_length(src.shape[1], "a source batch")
    mask = src != PAD_ID
    positions = jnp.broadcast_to(jnp.arange(src.shape[1]), src.shape)
    x = self._embed(self.src_embedding, getattr(self, "src_positions", None), src,
                    positions, train)
    for layer in self.encoder_layers:
      x = layer(x, mask[:, None, None, :], train)
    if self.config.norm == "pre":
      x = self.encoder_norm(x)
    return Encoded(memory=x, mask=mask)

  def decoder_start(self, encoded: Encoded, max_len: int = 0) -> tuple[Memory, DecoderState]:
    """The cross-attention keys and values, and an empty cache for `max_len`
    tokens (0: `config.max_len`)."""
    cfg = self.config
    self._check_length(max_len or cfg.max_len, "decoding outputs")
    cross = [layer.cross_keys_values(encoded.memory) for layer in self.decoder_layers]
    batch = encoded.memory.shape[0]
    shape = (batch, max_len or cfg.max_len, cfg.num_heads, cfg.head_dim)
    dtype = cross[0][0].dtype
    empty = tuple(jnp.zeros(shape, dtype) for _ in self.decoder_layers)
    mem = Memory(keys=tuple(k for k, _ in cross), values=tuple(v for _, v in cross),
                 mask=encoded.mask)
    return mem, DecoderState(position=jnp.zeros((batch,), jnp.int32), keys=empty,
                             values=empty)

  def decode_step(self, mem: Memory, state: DecoderState, tokens: jax.Array):
    """Feeds `tokens [batch]` at `state.position`, which must be below the
    cache's `max_len` (the decoding loops stop there; a write past it would
    overwrite the last slot).

    Returns:
      `(state, logits [batch, vocab] float32, weights [batch, src_len])`, the
      weights being the last layer's cross-attention averaged over heads.
    """
    position = state.position[0]
    x = self._embed(self.tgt_embedding, getattr(self, "tgt_positions", None),
                    tokens[:, None], state.position[:, None], False)
    filled = (jnp.arange(state.keys[0].shape[1]) <= position)[None, None, None, :]
    keys, values = [], []
    for i, layer in enumerate(self.decoder_layers):
      x, weights, (k, v) = layer(x, filled, (mem.keys[i], mem.values[i]),
                                 mem.mask[:, None, None, :], False,
                                 cache=(state.keys[i], state.values[i]), position=position)
      keys.append(k)
      values.append(v)
    if self.config.norm == "pre":
      x = self.decoder_norm(x)
    logits = self._logits(x[:, 0])
    state = DecoderState(position=state.position + 1, keys=tuple(keys), values=tuple(values))
    return state, logits, jnp.mean(weights[:, :, 0], axis=1)

  def output_projection(self) -> tuple[jax.Array, jax.Array]:
    w = self.tgt_embedding.T if self.config.tie_output else self.out_w
    return w.astype(self.config.compute_dtype), self.out_b.astype(self.config.compute_dtype)

  def _logits(self, features: jax.Array) -> jax.Array:
    w, b = self.output_projection()
    return ops.matmul(features, w) + ops.widen(b)

  # ----- training -----

  def decode_all(self, encoded: Encoded, tgt_in: jax.Array, train: bool = False):
    """Teacher-forced decoder over `tgt_in [batch, tgt_len]` (starting with `<sos>`).

    Returns:
      `(features [batch, tgt_len, d], cross-attention weights
      [batch, layers, h, tgt_len, src_len])`.
    """
    tgt_len = tgt_in.shape[1]
    self._check_length(tgt_len, "a target batch")
    positions = jnp.broadcast_to(jnp.arange(tgt_len), tgt_in.shape)
    x = self._embed(self.tgt_embedding, getattr(self, "tgt_positions", None), tgt_in,
                    positions, train)
    causal = jnp.tril(jnp.ones((tgt_len, tgt_len), bool))[None, None]
    cross_mask = encoded.mask[:, None, None, :]
    heads = []
    for layer in self.decoder_layers:
      x, weights, _ = layer(x, causal, layer.cross_keys_values(encoded.memory), cross_mask,
                            train)
      heads.append(weights)
    if self.config.norm == "pre":
      x = self.decoder_norm(x)
    return x, jnp.stack(heads, axis=1)

  def __call__(self, src: jax.Array, tgt: jax.Array, tf_prob=None,
               rng: jax.Array | None = None, train: bool = False,
               per_step: bool = False, project: bool = True) -> ForwardOutput:
    """Scores `tgt` given `src`; see `Seq2SeqModel.__call__` and, for `tf_prob`,
    this module's docstring (`per_step` takes the two passes even at 1)."""
    check_batch(src, tgt)
    encoded = self.encode(src, train=train)
    batch = tgt.shape[0]
    tgt_in = jnp.concatenate([jnp.full((batch, 1), SOS_ID, tgt.dtype), tgt[:, :-1]], 1)

    if tf_prob is None:
      features, heads = self.decode_all(encoded, tgt_in, train)
      return ForwardOutput(logits=self._logits(features) if project else None,
                           features=features, attention=jnp.mean(heads[:, -1], axis=1),
                           gold_fraction=jnp.ones((), jnp.float32), heads=heads)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    tf_prob = jnp.asarray(tf_prob, jnp.float32)

    def gold_inputs(mdl, encoded, tgt_in):
      features, heads = mdl.decode_all(encoded, tgt_in, train)
      return mdl._logits(features), heads, jnp.ones((), jnp.float32)

    def mixed_inputs(mdl, encoded, tgt_in):
      k_coin, k_sample = jax.random.split(rng)
      use_gold = jax.random.uniform(k_coin, tgt_in.shape) < tf_prob
      use_gold = use_gold.at[:, 0].set(True)  # the first input is always <sos>
      features, _ = mdl.decode_all(encoded, tgt_in, train)
      first = jax.lax.stop_gradient(mdl._logits(features))
      if mdl.config.predictions == "sample":
        predicted = jax.random.categorical(k_sample, first).astype(tgt_in.dtype)
      else:
        predicted = jnp.argmax(first, axis=-1).astype(tgt_in.dtype)
      # Input t is token t-1: gold, or the first pass's prediction of it.
      previous = jnp.concatenate([tgt_in[:, :1], predicted[:, :-1]], 1)
      features, heads = mdl.decode_all(encoded, jnp.where(use_gold, tgt_in, previous), train)
      gold = jnp.mean(use_gold[:, 1:].astype(jnp.float32)) if tgt_in.shape[1] > 1 else \
          jnp.ones((), jnp.float32)
      return mdl._logits(features), heads, gold

    if per_step:
      logits, heads, gold = mixed_inputs(self, encoded, tgt_in)
    else:  # all gold: one pass (nn.cond: the branches call submodules)
      logits, heads, gold = nn.cond(tf_prob >= 1.0, gold_inputs, mixed_inputs, self,
                                    encoded, tgt_in)
    return ForwardOutput(logits=logits, features=None, attention=jnp.mean(heads[:, -1], axis=1),
                         gold_fraction=gold, heads=heads)
