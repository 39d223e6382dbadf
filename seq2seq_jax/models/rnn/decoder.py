"""The RNN decoder: its parameters, one step, and the two training-time loops.

The `Decoder` module owns the parameters; every computation is a pure function
of a params dict (already cast to the compute dtype), so the time loop is a
plain `jax.lax.scan` and decoding can call one step at a time.
"""

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax import ops
from seq2seq_jax.models.rnn import attention as attn
from seq2seq_jax.models.rnn import cells
from seq2seq_jax.models.rnn.config import RNNConfig
from seq2seq_jax.models.rnn.encoder import EncoderOutput
from seq2seq_jax.models.rnn.layers import embed_init, state_dtype


class Memory(NamedTuple):
  """What every decoder step reads from the encoder."""
  memory: jax.Array  # [batch, src_len, hidden]
  keys: jax.Array | None  # [batch, src_len, key_dim], the score's prepare_keys
  mask: jax.Array  # [batch, src_len]
  const_proj: jax.Array | None  # [batch, G*hidden]: summary W, for context_every_step


class DecoderState(NamedTuple):
  carries: tuple  # per layer, a cell carry
  feed: jax.Array  # [batch, hidden] previous attentional state (input feeding)


class Dropout(NamedTuple):
  """Dropout multipliers of every decoder step, drawn before the scan."""
  emb: jax.Array  # [tgt_len, batch, embed_dim]
  inter: jax.Array  # [tgt_len, max(num_layers - 1, 1), batch, hidden] between layers
  out: jax.Array  # [tgt_len, batch, hidden] on the attentional state


class Decoder(nn.Module):
  """The decoder's parameters; its computation is in the pure functions below."""
  config: RNNConfig

  def setup(self):
    cfg = self.config
    cell = cells.CELLS[cfg.cell]
    h = cfg.hidden_dim
    extra = (h if cfg.input_feeding else 0) + (h if cfg.context_every_step else 0)
    extra += h if cfg.context_before_recurrence else 0
    self.embedding = self.param("embedding", embed_init, (cfg.tgt_vocab_size, cfg.embed_dim))
    layers = {}
    for layer in range(cfg.num_layers):
      in_dim = cfg.embed_dim + extra if layer == 0 else h
      init = functools.partial(cell.init, input_dim=in_dim, hidden_dim=h)
      layers[f"layer{layer}"] = self.param(f"layer{layer}", lambda k, f=init: f(k))
    self.layers = layers
    if cfg.has_attention:
      self.attention_params = self.param(
          "attention", lambda k: cfg.score.init(k, h, h, cfg.score_dim))
      self.w_c = self.param("w_c", nn.initializers.glorot_uniform(), (2 * h, h))
    if cfg.decoder_init == "learned":
      fields = cell.initial_carry(1, 1)._fields
      self.bridge = {f: self.param(f"bridge_{f}", nn.initializers.glorot_uniform(),
                                   (cfg.num_layers, h, h)) for f in fields}
    self.out_w = self.param("out_w", nn.initializers.glorot_uniform(), (h, cfg.tgt_vocab_size))
    self.out_b = self.param("out_b", nn.initializers.zeros, (cfg.tgt_vocab_size,))

  def params_dict(self) -> dict:
    p = {"embedding": self.embedding, **self.layers,
         "out_w": self.out_w, "out_b": self.out_b}
    if self.config.has_attention:
      p["attention"] = self.attention_params
      p["w_c"] = self.w_c
    return p

  def initial_carries(self, enc: EncoderOutput) -> tuple:
    """The decoder's initial carry of every layer, from the encoder's final states.

    `last` starts each decoder layer from the encoder layer's final hidden state
    `h`; an LSTM's cell state starts from that `h` as well (as JoeyNMT does), not
    from the encoder's cell state. The encoder's cell state is unbounded: handed
    to the decoder, it grew to |c| ~ 4 (max 94) on `debian:de-en`, saturated the
    decoder's gates so that every decoder state, and so every attention query,
    was nearly the same, and learned attention collapsed onto one source token
    (`experiments/parity/README.md`). `last_state` hands over the whole final
    state, cell state included (tensorflow/nmt, OpenNMT-py; `last` before the
    parity fix).
    """
    cfg = self.config
    cell = cells.CELLS[cfg.cell]
    batch = enc.memory.shape[0]
    if cfg.decoder_init == "zero":
      dtype = state_dtype(enc.memory.dtype)
      return tuple(cell.initial_carry(batch, cfg.hidden_dim, dtype)
                   for _ in range(cfg.num_layers))
    if cfg.decoder_init == "last_state":
      return tuple(enc.final)
    if cfg.decoder_init == "last":
      return tuple(final._replace(c=final.h) if "c" in final._fields else final
                   for final in enc.final)
    return tuple(
        type(final)(*(jnp.tanh(ops.matmul(getattr(final, f), self.bridge[f][layer]))
                      for f in final._fields))
        for layer, final in enumerate(enc.final))


def start(cfg: RNNConfig, p, enc: EncoderOutput, carries: tuple) -> tuple[Memory, DecoderState]:
  """The decoder's memory and initial state for encoded sentences."""
  keys = cfg.score.prepare_keys(p["attention"], enc.memory) if cfg.has_attention else None
  const_proj = None
  if cfg.context_every_step:
    # The summary (top layer's final h) has the last rows of W_ih.
    w = p["layer0"]["w_ih"][-cfg.hidden_dim:]
    const_proj = ops.matmul(enc.final[-1].h, w)
  mem = Memory(memory=enc.memory, keys=keys, mask=enc.mask, const_proj=const_proj)
  batch = enc.memory.shape[0]
  state = DecoderState(carries=carries, feed=jnp.zeros((batch, cfg.hidden_dim),
                                                       state_dtype(cfg.compute_dtype)))
  return mem, state


def _layer0_extra(cfg: RNNConfig, p, mem: Memory, state: DecoderState):
  """The inputs of layer 0 beside the embedding: (extra, context, weights)."""
  extra, context, weights = [], None, None
  if cfg.input_feeding:
    extra.append(state.feed)
  if cfg.context_before_recurrence:  # Bahdanau: query with the previous state
    context, weights = attn.attend(cfg.attention, p["attention"], mem.keys, mem.memory,
                                   mem.mask, state.carries[-1].h)
    extra.append(context)
  return extra, context, weights


def decoder_step(cfg: RNNConfig, p, mem: Memory, state: DecoderState,
                 emb_proj: jax.Array, inter_drop=None):
  """One decoder time step.

  Args:
    cfg: the model's hyperparameters.
    p: decoder params, already cast to the compute dtype.
    mem: the encoder memory.
    state: the decoder state before this step.
    emb_proj: `[batch, G*hidden]` the embedding's part of layer 0's input
      projection (`emb W_ih[:E] + b_ih`, plus the summary's part for
      `context_every_step`).
    inter_drop: optional `[num_layers - 1, batch, hidden]` dropout multipliers
      between layers.

  Returns:
    `(state, out, weights)`: `out [batch, hidden]` the attentional state
    `tanh(W_c [context; h])` (the top layer's `h` without attention) and the
    attention weights `[batch, src_len]` (None without attention).
  """
  cell = cells.CELLS[cfg.cell]
  dtype = cfg.compute_dtype
  extra, context, weights = _layer0_extra(cfg, p, mem, state)
  gx = emb_proj
  if extra:
    # Layer 0's input rows: [embedding; feed; score context; summary].
    extra = jnp.concatenate([e.astype(dtype) for e in extra], -1)
    w_extra = p["layer0"]["w_ih"][cfg.embed_dim:cfg.embed_dim + extra.shape[-1]]
    gx = gx + ops.matmul(extra, w_extra)
  new_carries = []
  gx = cell.finish_input(p["layer0"], gx)
  carry, h = cell.recurrent_step(p["layer0"], state.carries[0], gx)
  new_carries.append(carry)
  for layer in range(1, cfg.num_layers):
    x = h.astype(dtype)
    if inter_drop is not None:
      x = x * inter_drop[layer - 1]
    carry, h = cell.step(p[f"layer{layer}"], state.carries[layer], x)
    new_carries.append(carry)
  if not cfg.has_attention:
    out = h
  else:
    if not cfg.context_before_recurrence:  # Luong: query with the current state
      context, weights = attn.attend(cfg.attention, p["attention"], mem.keys,
                                     mem.memory, mem.mask, h)
    out = attentional_state(cfg, p, context, h)
  return DecoderState(carries=tuple(new_carries), feed=out), out, weights


def attentional_state(cfg: RNNConfig, p, context: jax.Array, h: jax.Array) -> jax.Array:
  """`tanh(W_c [context; h])`, `[..., hidden]`."""
  dtype = cfg.compute_dtype
  both = jnp.concatenate([context.astype(dtype), h.astype(dtype)], -1)
  return jnp.tanh(ops.matmul(both, p["w_c"]))


def embedding_projection(cfg: RNNConfig, p, mem: Memory, tokens: jax.Array,
                         emb_drop: jax.Array | None = None) -> jax.Array:
  """Layer 0's input projection of `tokens [..., batch]`: `[..., batch, G*hidden]`.

  That is `emb(tokens) W_ih[:E] + b_ih`, plus the summary's part for
  `context_every_step`, before the cell's `finish_input`; `emb_drop` are
  dropout multipliers for the embeddings.
  """
  emb = jnp.take(p["embedding"], tokens, axis=0)
  if emb_drop is not None:
    emb = emb * emb_drop
  proj = ops.matmul(emb, p["layer0"]["w_ih"][:cfg.embed_dim])
  if "b_ih" in p["layer0"]:  # ln_lstm adds its one bias after the layer norm
    proj = proj + p["layer0"]["b_ih"]
  return proj if mem.const_proj is None else proj + mem.const_proj


def output_logits(p, out: jax.Array) -> jax.Array:
  """Float32 logits `[..., vocab]` of attentional states `out [..., hidden]`."""
  return ops.matmul(out, p["out_w"]) + ops.widen(p["out_b"])
