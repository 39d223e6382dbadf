"""The RNN encoder-decoder (`config.model.family="rnn"`): the model interface
of `models.interface` over the encoder and decoder of this package.

Three training-time paths: plain teacher forcing with attention inside the
recurrence (input feeding, or a score that queries the previous state), plain
teacher forcing with attention after it (one scan a layer, then all steps'
attention at once), and the per-token scheduled-sampling scan.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax.models.interface import ForwardOutput, check_batch
from seq2seq_jax.models.rnn import attention as attn
from seq2seq_jax.models.rnn import cells, decoder
from seq2seq_jax.models.rnn.config import RNNConfig
from seq2seq_jax.models.rnn.decoder import Decoder
from seq2seq_jax.models.rnn.encoder import Encoder, EncoderOutput
from seq2seq_jax.models.rnn.layers import cast, dropout_scale, state_dtype
from seq2seq_jax.tokens import SOS_ID


def _batch_major(x):
  return None if x is None else jnp.swapaxes(x, 0, 1)


class RNNSeq2Seq(nn.Module):
  """RNN encoder-decoder with optional attention; implements `Seq2SeqModel`."""
  config: RNNConfig

  def setup(self):
    self.encoder = Encoder(self.config)
    self.decoder = Decoder(self.config)

  @property
  def has_attention(self) -> bool:
    return self.config.has_attention

  # ----- building blocks, also used by decoding -----

  def encode(self, src: jax.Array, train: bool = False) -> EncoderOutput:
    return self.encoder(src, train=train)

  def decoder_params(self):
    return cast(self.decoder.params_dict(), self.config.compute_dtype)

  def decoder_start(self, enc: EncoderOutput,
                    max_len: int = 0) -> tuple[decoder.Memory, decoder.DecoderState]:
    del max_len  # the recurrent state does not grow with the output
    return decoder.start(self.config, self.decoder_params(), enc,
                         self.decoder.initial_carries(enc))

  def decode_step(self, mem: decoder.Memory, state: decoder.DecoderState, tokens: jax.Array):
    """Feeds `tokens [batch]`; returns `(state, logits [batch, vocab], weights)`."""
    cfg, p = self.config, self.decoder_params()
    state, out, weights = decoder.decoder_step(
        cfg, p, mem, state, decoder.embedding_projection(cfg, p, mem, tokens))
    return state, decoder.output_logits(p, out), weights

  def output_projection(self) -> tuple[jax.Array, jax.Array]:
    p = self.decoder_params()
    return p["out_w"], p["out_b"]

  # ----- training -----

  def __call__(self, src: jax.Array, tgt: jax.Array, tf_prob=None,
               rng: jax.Array | None = None, train: bool = False,
               per_step: bool = False, project: bool = True) -> ForwardOutput:
    """Scores `tgt` given `src`; see `Seq2SeqModel.__call__`.

    Plain teacher forcing (`tf_prob=None`) computes the embeddings and input
    projections of all steps before the scan and the output projection after
    it. A traced `tf_prob` of 1 takes that path through `jax.lax.cond`.
    """
    check_batch(src, tgt)
    cfg = self.config
    enc = self.encode(src, train=train)
    mem, state = self.decoder_start(enc)
    p = self.decoder_params()
    batch, tgt_len = tgt.shape
    tgt_in = jnp.concatenate([jnp.full((batch, 1), SOS_ID, tgt.dtype), tgt[:, :-1]], 1)
    drop = self._decoder_dropout(tgt_len, batch) if train and cfg.dropout > 0 else None

    def fast():
      outs, weights = teacher_forced(cfg, p, mem, state, tgt_in.T, drop)
      return jnp.swapaxes(outs, 0, 1), _batch_major(weights)

    if tf_prob is None:
      features, weights = fast()
      return ForwardOutput(logits=decoder.output_logits(p, features) if project else None,
                           features=features, attention=weights,
                           gold_fraction=jnp.ones((), jnp.float32))

    def sampled():
      logits, weights, gold = scheduled(cfg, p, mem, state, tgt_in.T, drop, tf_prob, rng)
      return jnp.swapaxes(logits, 0, 1), _batch_major(weights), gold

    def fast_logits():
      features, weights = fast()
      return decoder.output_logits(p, features), weights, jnp.ones((), jnp.float32)

    rng = jax.random.PRNGKey(0) if rng is None else rng
    tf_prob = jnp.asarray(tf_prob, jnp.float32)
    if per_step:
      logits, weights, gold = sampled()
    else:
      logits, weights, gold = jax.lax.cond(tf_prob >= 1.0, fast_logits, sampled)
    return ForwardOutput(logits=logits, features=None, attention=weights, gold_fraction=gold)

  def _decoder_dropout(self, tgt_len, batch) -> decoder.Dropout:
    cfg = self.config
    h, dt = cfg.hidden_dim, cfg.compute_dtype
    k_emb, k_inter, k_out = jax.random.split(self.make_rng("dropout"), 3)
    return decoder.Dropout(
        emb=dropout_scale(k_emb, (tgt_len, batch, cfg.embed_dim), cfg.dropout, dt),
        inter=dropout_scale(k_inter, (tgt_len, max(cfg.num_layers - 1, 1), batch, h),
                            cfg.dropout, dt),
        out=dropout_scale(k_out, (tgt_len, batch, h), cfg.dropout, state_dtype(dt)))


def teacher_forced(cfg: RNNConfig, p, mem, state, tgt_in_t, drop):
  """Fast path: `tgt_in_t [tgt_len, batch]` -> outputs `[tgt_len, batch, hidden]`."""
  proj = decoder.embedding_projection(cfg, p, mem, tgt_in_t,
                                      None if drop is None else drop.emb)
  inter = None if drop is None else drop.inter
  if cfg.input_feeding or cfg.context_before_recurrence:
    outs, weights = _attention_in_recurrence(cfg, p, mem, state, proj, inter)
  else:
    outs, weights = _attention_after_recurrence(cfg, p, mem, state, proj, inter)
  return (outs if drop is None else outs * drop.out), weights


def _attention_in_recurrence(cfg, p, mem, state, proj, inter):
  """Input feeding or a previous-state score: one scan over the whole step."""
  def body(state, xs):
    proj_t, inter_t = xs
    state, out, weights = decoder.decoder_step(cfg, p, mem, state, proj_t, inter_t)
    return state, (out, weights)

  _, (outs, weights) = jax.lax.scan(body, state, (proj, inter), unroll=cfg.unroll)
  return outs, weights


def _attention_after_recurrence(cfg, p, mem, state, proj, inter):
  """Luong attention without input feeding reads the decoder states but
  does not feed them: the layers run as the encoder's do (one scan each),
  then attention for all steps at once."""
  cell = cells.CELLS[cfg.cell]
  gx = cell.finish_input(p["layer0"], proj)
  _, hs = cells.scan_projected(cell, p["layer0"], state.carries[0], gx, unroll=cfg.unroll)
  for layer in range(1, cfg.num_layers):
    x = hs.astype(cfg.compute_dtype)
    if inter is not None:
      x = x * inter[:, layer - 1]
    _, hs = cells.scan_cell(cell, p[f"layer{layer}"], state.carries[layer], x,
                            unroll=cfg.unroll)
  if not cfg.has_attention:
    return hs, None
  queries = jnp.swapaxes(hs, 0, 1)  # [batch, tgt_len, hidden], as bmm wants it
  context, weights = attn.attend_all(cfg.attention, p["attention"], mem.keys, mem.memory,
                                     mem.mask, queries)
  out = decoder.attentional_state(cfg, p, context, queries)
  return jnp.swapaxes(out, 0, 1), jnp.swapaxes(weights, 0, 1)


def scheduled(cfg: RNNConfig, p, mem, state, tgt_in_t, drop, tf_prob, rng):
  """Per-step path: each step reads gold with probability `tf_prob`.

  Returns `(logits [tgt_len, batch, vocab], weights, gold_fraction)`.
  """
  tgt_len, batch = tgt_in_t.shape
  k_coin, k_sample = jax.random.split(rng)
  use_gold = jax.random.uniform(k_coin, (tgt_len, batch)) < tf_prob
  use_gold = use_gold.at[0].set(True)  # the first input is always <sos>
  sample_keys = jax.random.split(k_sample, tgt_len)
  drop_xs = (None, None, None) if drop is None else (drop.emb, drop.inter, drop.out)

  def body(carry, xs):
    state, prev_pred = carry
    gold_t, use_gold_t, key_t, (emb_drop, inter_t, out_drop) = xs
    tokens = jnp.where(use_gold_t, gold_t, prev_pred)
    proj_t = decoder.embedding_projection(cfg, p, mem, tokens, emb_drop)
    state, out, weights = decoder.decoder_step(cfg, p, mem, state, proj_t, inter_t)
    if out_drop is not None:
      out = out * out_drop
    logits = decoder.output_logits(p, out)
    if cfg.predictions == "sample":
      pred = jax.random.categorical(key_t, logits).astype(tokens.dtype)
    else:
      pred = jnp.argmax(logits, axis=-1).astype(tokens.dtype)
    return (state, pred), (logits, weights)

  init = (state, jnp.zeros((batch,), tgt_in_t.dtype))
  _, (logits, weights) = jax.lax.scan(
      body, init, (tgt_in_t, use_gold, sample_keys, drop_xs), unroll=cfg.unroll)
  gold = jnp.mean(use_gold[1:].astype(jnp.float32)) if tgt_len > 1 else jnp.ones(())
  return logits, weights, gold
