"""RNN encoder-decoder: Flax linen modules that scan the pure cells.

The modules own the parameters (`self.param`) and nothing else: every
computation is a pure function of a params dict, so the decoder's time loop is
a plain `jax.lax.scan`, the teacher-forced and the scheduled-sampling paths can
sit in the two branches of a `jax.lax.cond`, and decoding (greedy, beam) can
call one decoder step at a time.

Shapes: `src [batch, src_len]`, `tgt [batch, tgt_len]` int32, padded with
`PAD_ID` at the end; `tgt` ends each sentence with `EOS_ID` and the decoder
reads `[SOS_ID] + tgt[:-1]`.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax import attention as attn
from seq2seq_jax import cells, ops
from seq2seq_jax.tokens import PAD_ID, SOS_ID

DECODER_INITS = ("last", "last_state", "learned", "zero")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "float64": jnp.float64}  # float64 needs jax_enable_x64; for gradient checks
PREDICTIONS = ("argmax", "sample")


class EncoderOutput(NamedTuple):
  memory: jax.Array  # [batch, src_len, hidden]
  mask: jax.Array  # [batch, src_len] bool, True on real tokens
  final: tuple  # per layer, the carry after each sentence's last token


class Memory(NamedTuple):
  """What every decoder step reads from the encoder."""
  memory: jax.Array  # [batch, src_len, hidden]
  keys: jax.Array | None  # [batch, src_len, key_dim], see attention.prepare_keys
  mask: jax.Array  # [batch, src_len]
  const_proj: jax.Array | None  # [batch, G*hidden]: summary W, for context_every_step


class DecoderState(NamedTuple):
  carries: tuple  # per layer, a cell carry
  feed: jax.Array  # [batch, hidden] previous attentional state (input feeding)


def _check_positive(name, value):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"model.{name} must be a positive int, got {value!r}")


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"model.{name}={value!r} is not valid; valid choices: "
                     f"{', '.join(map(str, choices))}")


def _check_batch(src, tgt) -> None:
  """Shape and dtype errors that would otherwise surface deep inside a scan."""
  for name, x in (("src", src), ("tgt", tgt)):
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
      raise ValueError(f"{name} must be int token ids [batch, length], got "
                       f"{x.dtype} {tuple(x.shape)}")
    if x.shape[1] == 0:
      raise ValueError(f"{name} has length 0: {tuple(x.shape)}")
  if src.shape[0] != tgt.shape[0]:
    raise ValueError(f"src and tgt batch sizes differ: src {tuple(src.shape)}, "
                     f"tgt {tuple(tgt.shape)}")


def reverse_within_length(tokens: jax.Array, lengths: jax.Array) -> jax.Array:
  """Reverses each row's first `lengths[b]` tokens, leaving the padding in place."""
  t = jnp.arange(tokens.shape[1])[None, :]
  idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
  return jnp.take_along_axis(tokens, idx, axis=1)


def state_dtype(dtype):
  """Carries, attention and logits stay in at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def _batch_major(x):
  return None if x is None else jnp.swapaxes(x, 0, 1)


def _cast(tree, dtype):
  return jax.tree.map(lambda a: a.astype(dtype), tree)


def _dropout_scale(key, shape, rate, dtype):
  """Inverted-dropout multipliers: 0 or 1/(1-rate)."""
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def _embed_init(key, shape, dtype=jnp.float32):
  return jax.random.normal(key, shape, dtype) * (shape[1] ** -0.5)


class Encoder(nn.Module):
  """Embeddings, then `num_layers` (optionally bidirectional) recurrent layers.

  A bidirectional layer has `hidden_dim // 2` units per direction, so its
  outputs and its final state have `hidden_dim` units like a unidirectional
  one (as in OpenNMT's `brnn`).
  """
  vocab_size: int
  cell: str
  embed_dim: int
  hidden_dim: int
  num_layers: int
  bidirectional: bool
  reverse_source: bool
  dropout: float
  dtype: Any
  unroll: int

  def setup(self):
    cell = cells.get_cell(self.cell)
    self.unit = self.hidden_dim // 2 if self.bidirectional else self.hidden_dim
    self.embedding = self.param("embedding", _embed_init,
                                (self.vocab_size, self.embed_dim))
    layers = []
    for layer in range(self.num_layers):
      in_dim = self.embed_dim if layer == 0 else self.hidden_dim
      init = functools.partial(cell.init, input_dim=in_dim, hidden_dim=self.unit)
      dirs = {"fwd": self.param(f"layer{layer}_fwd", lambda k, f=init: f(k))}
      if self.bidirectional:
        dirs["bwd"] = self.param(f"layer{layer}_bwd", lambda k, f=init: f(k))
      layers.append(dirs)
    self.layers = layers

  def __call__(self, src: jax.Array, train: bool = False) -> EncoderOutput:
    """Encodes `src [batch, src_len]`."""
    cell = cells.get_cell(self.cell)
    mask = src != PAD_ID
    if self.reverse_source:
      src = reverse_within_length(src, jnp.sum(mask, axis=1))
    batch, src_len = src.shape
    x = jnp.take(self.embedding, src.T, axis=0).astype(self.dtype)  # [S, B, E]
    mask_t = mask.T
    use_dropout = train and self.dropout > 0
    if use_dropout:
      x = x * _dropout_scale(self.make_rng("dropout"), x.shape, self.dropout, x.dtype)
    finals = []
    for layer, dirs in enumerate(self.layers):
      carry0 = cell.initial_carry(batch, self.unit, state_dtype(self.dtype))
      carry, hs = cells.scan_cell(cell, _cast(dirs["fwd"], self.dtype), carry0,
                                  x, mask_t, unroll=self.unroll)
      if self.bidirectional:
        carry_b, hs_b = cells.scan_cell(cell, _cast(dirs["bwd"], self.dtype), carry0,
                                        x, mask_t, reverse=True, unroll=self.unroll)
        carry = jax.tree.map(lambda a, b: jnp.concatenate([a, b], -1), carry, carry_b)
        hs = jnp.concatenate([hs, hs_b], -1)
      finals.append(carry)
      x = hs.astype(self.dtype)
      if use_dropout and layer < self.num_layers - 1:
        x = x * _dropout_scale(self.make_rng("dropout"), x.shape, self.dropout, x.dtype)
    return EncoderOutput(memory=jnp.swapaxes(x, 0, 1), mask=mask, final=tuple(finals))


class DecoderSpec(NamedTuple):
  """The static choices a decoder step depends on."""
  cell: str
  attention: str
  embed_dim: int
  num_layers: int
  input_feeding: bool
  context_every_step: bool
  dtype: Any


def _layer0_extra(spec: DecoderSpec, p, mem: Memory, state: DecoderState):
  """The inputs of layer 0 beside the embedding: (extra, context, weights)."""
  extra, context, weights = [], None, None
  if spec.input_feeding:
    extra.append(state.feed)
  if spec.attention == "additive":  # Bahdanau: query with the previous state
    context, weights = attn.attend("additive", p["attention"], mem.keys, mem.memory,
                                   mem.mask, state.carries[-1].h)
    extra.append(context)
  return extra, context, weights


def decoder_step(spec: DecoderSpec, p, mem: Memory, state: DecoderState,
                 emb_proj: jax.Array, inter_drop=None):
  """One decoder time step.

  Args:
    spec: the static choices.
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
  cell = cells.get_cell(spec.cell)
  extra, context, weights = _layer0_extra(spec, p, mem, state)
  gx = emb_proj
  if extra:
    # Layer 0's input rows: [embedding; feed; additive context; summary].
    extra = jnp.concatenate([e.astype(spec.dtype) for e in extra], -1)
    w_extra = p["layer0"]["w_ih"][spec.embed_dim:spec.embed_dim + extra.shape[-1]]
    gx = gx + ops.matmul(extra, w_extra)
  new_carries = []
  gx = cell.finish_input(p["layer0"], gx)
  carry, h = cell.recurrent_step(p["layer0"], state.carries[0], gx)
  new_carries.append(carry)
  for layer in range(1, spec.num_layers):
    x = h.astype(spec.dtype)
    if inter_drop is not None:
      x = x * inter_drop[layer - 1]
    carry, h = cell.step(p[f"layer{layer}"], state.carries[layer], x)
    new_carries.append(carry)
  if spec.attention == "none":
    out = h
  else:
    if spec.attention != "additive":  # Luong: query with the current state
      context, weights = attn.attend(spec.attention, p["attention"], mem.keys,
                                     mem.memory, mem.mask, h)
    out = attentional_state(spec, p, context, h)
  return DecoderState(carries=tuple(new_carries), feed=out), out, weights


def attentional_state(spec: DecoderSpec, p, context: jax.Array, h: jax.Array) -> jax.Array:
  """`tanh(W_c [context; h])`, `[..., hidden]`."""
  both = jnp.concatenate([context.astype(spec.dtype), h.astype(spec.dtype)], -1)
  return jnp.tanh(ops.matmul(both, p["w_c"]))


def embedding_projection(spec: DecoderSpec, p, mem: Memory, tokens: jax.Array,
                         emb_drop: jax.Array | None = None) -> jax.Array:
  """Layer 0's input projection of `tokens [..., batch]`: `[..., batch, G*hidden]`.

  That is `emb(tokens) W_ih[:E] + b_ih`, plus the summary's part for
  `context_every_step`, before the cell's `finish_input`; `emb_drop` are
  dropout multipliers for the embeddings.
  """
  emb = jnp.take(p["embedding"], tokens, axis=0)
  if emb_drop is not None:
    emb = emb * emb_drop
  proj = ops.matmul(emb, p["layer0"]["w_ih"][:spec.embed_dim])
  if "b_ih" in p["layer0"]:  # ln_lstm adds its one bias after the layer norm
    proj = proj + p["layer0"]["b_ih"]
  return proj if mem.const_proj is None else proj + mem.const_proj


def output_logits(p, out: jax.Array) -> jax.Array:
  """Float32 logits `[..., vocab]` of attentional states `out [..., hidden]`."""
  return ops.matmul(out, p["out_w"]) + ops.widen(p["out_b"])


class Decoder(nn.Module):
  """The decoder's parameters; its computation is in the pure functions above."""
  vocab_size: int
  cell: str
  attention: str
  embed_dim: int
  hidden_dim: int
  num_layers: int
  attention_dim: int
  input_feeding: bool
  context_every_step: bool
  decoder_init: str

  def setup(self):
    cell = cells.get_cell(self.cell)
    h = self.hidden_dim
    extra = (h if self.input_feeding else 0) + (h if self.context_every_step else 0)
    extra += h if self.attention == "additive" else 0
    self.embedding = self.param("embedding", _embed_init, (self.vocab_size, self.embed_dim))
    layers = {}
    for layer in range(self.num_layers):
      in_dim = self.embed_dim + extra if layer == 0 else h
      init = functools.partial(cell.init, input_dim=in_dim, hidden_dim=h)
      layers[f"layer{layer}"] = self.param(f"layer{layer}", lambda k, f=init: f(k))
    self.layers = layers
    if self.attention != "none":
      self.attention_params = self.param(
          "attention", lambda k: attn.init(self.attention, k, h, h, self.attention_dim))
      self.w_c = self.param("w_c", nn.initializers.glorot_uniform(), (2 * h, h))
    if self.decoder_init == "learned":
      fields = cell.initial_carry(1, 1)._fields
      self.bridge = {f: self.param(f"bridge_{f}", nn.initializers.glorot_uniform(),
                                   (self.num_layers, h, h)) for f in fields}
    self.out_w = self.param("out_w", nn.initializers.glorot_uniform(), (h, self.vocab_size))
    self.out_b = self.param("out_b", nn.initializers.zeros, (self.vocab_size,))

  def params_dict(self) -> dict:
    p = {"embedding": self.embedding, **self.layers,
         "out_w": self.out_w, "out_b": self.out_b}
    if self.attention != "none":
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
    cell = cells.get_cell(self.cell)
    batch = enc.memory.shape[0]
    if self.decoder_init == "zero":
      dtype = state_dtype(enc.memory.dtype)
      return tuple(cell.initial_carry(batch, self.hidden_dim, dtype)
                   for _ in range(self.num_layers))
    if self.decoder_init == "last_state":
      return tuple(enc.final)
    if self.decoder_init == "last":
      return tuple(final._replace(c=final.h) if "c" in final._fields else final
                   for final in enc.final)
    return tuple(
        type(final)(*(jnp.tanh(ops.matmul(getattr(final, f), self.bridge[f][layer]))
                      for f in final._fields))
        for layer, final in enumerate(enc.final))


class Seq2Seq(nn.Module):
  """RNN encoder-decoder with optional attention.

  Attributes mirror `config.model`; `Seq2Seq(src_vocab_size=..,
  tgt_vocab_size=.., **config.model)` builds the configured model.
  """
  src_vocab_size: int
  tgt_vocab_size: int
  cell: str = "lstm"
  attention: str = "dot"
  embed_dim: int = 256
  hidden_dim: int = 512
  num_layers: int = 1
  bidirectional: bool = False
  reverse_source: bool = False
  input_feeding: bool = False
  context_every_step: bool = False
  decoder_init: str = "last"
  attention_dim: int = 0  # concat / additive score size; 0 means hidden_dim
  dropout: float = 0.0
  dtype: str = "float32"
  predictions: str = "argmax"  # what free-running steps feed back
  unroll: int = 1  # jax.lax.scan unroll of every time loop

  def __post_init__(self):
    if self.cell not in cells.CELLS:
      raise ValueError(f"model.cell={self.cell!r} is not valid; valid cells: "
                       f"{', '.join(cells.CELLS)}")
    _check_choice("attention", self.attention, attn.ATTENTION_TYPES)
    _check_choice("decoder_init", self.decoder_init, DECODER_INITS)
    _check_choice("dtype", self.dtype, tuple(DTYPES))
    _check_choice("predictions", self.predictions, PREDICTIONS)
    for name in ("src_vocab_size", "tgt_vocab_size", "embed_dim", "hidden_dim",
                 "num_layers", "unroll"):
      _check_positive(name, getattr(self, name))
    if isinstance(self.attention_dim, bool) or not isinstance(self.attention_dim, int) \
        or self.attention_dim < 0:
      raise ValueError(f"model.attention_dim must be an int >= 0, got {self.attention_dim!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
    if self.bidirectional and self.hidden_dim % 2:
      raise ValueError(f"model.hidden_dim must be even with model.bidirectional "
                       f"(hidden_dim // 2 units a direction), got {self.hidden_dim}")
    super().__post_init__()

  def setup(self):
    self.compute_dtype = DTYPES[self.dtype]
    self.encoder = Encoder(
        vocab_size=self.src_vocab_size, cell=self.cell, embed_dim=self.embed_dim,
        hidden_dim=self.hidden_dim, num_layers=self.num_layers,
        bidirectional=self.bidirectional, reverse_source=self.reverse_source,
        dropout=self.dropout, dtype=self.compute_dtype, unroll=self.unroll)
    self.decoder = Decoder(
        vocab_size=self.tgt_vocab_size, cell=self.cell, attention=self.attention,
        embed_dim=self.embed_dim, hidden_dim=self.hidden_dim, num_layers=self.num_layers,
        attention_dim=self.attention_dim or self.hidden_dim,
        input_feeding=self.input_feeding, context_every_step=self.context_every_step,
        decoder_init=self.decoder_init)
    self.spec = DecoderSpec(
        cell=self.cell, attention=self.attention, embed_dim=self.embed_dim,
        num_layers=self.num_layers, input_feeding=self.input_feeding,
        context_every_step=self.context_every_step, dtype=self.compute_dtype)

  # ----- building blocks, also used by decoding -----

  def encode(self, src: jax.Array, train: bool = False) -> EncoderOutput:
    return self.encoder(src, train=train)

  def decoder_params(self):
    return _cast(self.decoder.params_dict(), self.compute_dtype)

  def start(self, enc: EncoderOutput) -> tuple[Memory, DecoderState]:
    """The decoder's memory and initial state for encoded sentences."""
    p = self.decoder_params()
    keys = None
    if self.attention != "none":
      keys = attn.prepare_keys(self.attention, p["attention"], enc.memory)
    const_proj = None
    if self.context_every_step:
      # The summary (top layer's final h) has the last rows of W_ih.
      w = p["layer0"]["w_ih"][-self.hidden_dim:]
      const_proj = ops.matmul(enc.final[-1].h, w)
    mem = Memory(memory=enc.memory, keys=keys, mask=enc.mask, const_proj=const_proj)
    batch = enc.memory.shape[0]
    state = DecoderState(carries=self.decoder.initial_carries(enc),
                         feed=jnp.zeros((batch, self.hidden_dim),
                                        state_dtype(self.compute_dtype)))
    return mem, state

  def decode_step(self, mem: Memory, state: DecoderState, tokens: jax.Array):
    """Feeds `tokens [batch]`; returns `(state, logits [batch, vocab], weights)`."""
    p = self.decoder_params()
    state, out, weights = decoder_step(
        self.spec, p, mem, state, embedding_projection(self.spec, p, mem, tokens))
    return state, output_logits(p, out), weights

  # ----- training -----

  def __call__(self, src: jax.Array, tgt: jax.Array, tf_prob=None,
               rng: jax.Array | None = None, train: bool = False,
               per_step: bool = False, project: bool = True) -> dict:
    """Scores `tgt` given `src`, feeding gold or predicted tokens.

    Args:
      src: `[batch, src_len]` source tokens.
      tgt: `[batch, tgt_len]` target tokens, each sentence ending in EOS.
      tf_prob: None for plain teacher forcing (the fast path: the embeddings
        and input projections of all steps are computed before the scan and the
        output projection after it), else the probability (a scalar, may be
        traced) that a step reads the gold previous token rather than the
        model's own prediction, decided per token inside the scan. A traced
        probability of 1 takes the fast path through `jax.lax.cond`.
      rng: key for the teacher-forcing coins and sampled predictions.
      train: apply dropout (needs a 'dropout' rng).
      per_step: always take the per-step path, even where `tf_prob` is 1.
      project: with `tf_prob=None`, False returns the decoder outputs
        (`features [batch, tgt_len, hidden]`) instead of the logits, for
        `losses.projected_cross_entropy`.

    Returns:
      dict with `logits [batch, tgt_len, vocab]` (float32; None when not
      `project`), `features`, `attention [batch, tgt_len, src_len]` (None
      without attention) and `gold_fraction` (the fraction of steps after the
      first that read the gold token).
    """
    _check_batch(src, tgt)
    enc = self.encode(src, train=train)
    mem, state = self.start(enc)
    p = self.decoder_params()
    batch, tgt_len = tgt.shape
    tgt_in = jnp.concatenate([jnp.full((batch, 1), SOS_ID, tgt.dtype), tgt[:, :-1]], 1)
    drop = self._decoder_dropout(tgt_len, batch) if train and self.dropout > 0 else None

    def fast():
      outs, weights = self._teacher_forced(p, mem, state, tgt_in.T, drop)
      return jnp.swapaxes(outs, 0, 1), _batch_major(weights)

    if tf_prob is None:
      features, weights = fast()
      return {"logits": output_logits(p, features) if project else None,
              "features": features, "attention": weights,
              "gold_fraction": jnp.ones((), jnp.float32)}

    def sampled():
      logits, weights, gold = self._scheduled(p, mem, state, tgt_in.T, drop, tf_prob, rng)
      return jnp.swapaxes(logits, 0, 1), _batch_major(weights), gold

    def fast_logits():
      features, weights = fast()
      return output_logits(p, features), weights, jnp.ones((), jnp.float32)

    rng = jax.random.PRNGKey(0) if rng is None else rng
    tf_prob = jnp.asarray(tf_prob, jnp.float32)
    if per_step:
      logits, weights, gold = sampled()
    else:
      logits, weights, gold = jax.lax.cond(tf_prob >= 1.0, fast_logits, sampled)
    return {"logits": logits, "features": None, "attention": weights, "gold_fraction": gold}

  def _decoder_dropout(self, tgt_len, batch):
    """Dropout multipliers for every decoder step, drawn before the scan."""
    h, dt = self.hidden_dim, self.compute_dtype
    k_emb, k_inter, k_out = jax.random.split(self.make_rng("dropout"), 3)
    return {
        "emb": _dropout_scale(k_emb, (tgt_len, batch, self.embed_dim), self.dropout, dt),
        "inter": _dropout_scale(k_inter, (tgt_len, max(self.num_layers - 1, 1), batch, h),
                                self.dropout, dt),
        "out": _dropout_scale(k_out, (tgt_len, batch, h), self.dropout, state_dtype(dt)),
    }

  def _teacher_forced(self, p, mem, state, tgt_in_t, drop):
    """Fast path: `tgt_in_t [tgt_len, batch]` -> outputs `[tgt_len, batch, hidden]`."""
    spec = self.spec
    proj = embedding_projection(spec, p, mem, tgt_in_t, None if drop is None else drop["emb"])
    inter = None if drop is None else drop["inter"]
    if self.input_feeding or self.attention == "additive":
      outs, weights = self._attention_in_recurrence(p, mem, state, proj, inter)
    else:
      outs, weights = self._attention_after_recurrence(p, mem, state, proj, inter)
    return (outs if drop is None else outs * drop["out"]), weights

  def _attention_in_recurrence(self, p, mem, state, proj, inter):
    """Input feeding or Bahdanau attention: one scan over the whole step."""
    spec = self.spec

    def body(state, xs):
      proj_t, inter_t = xs
      state, out, weights = decoder_step(spec, p, mem, state, proj_t, inter_t)
      return state, (out, weights)

    _, (outs, weights) = jax.lax.scan(body, state, (proj, inter), unroll=self.unroll)
    return outs, weights

  def _attention_after_recurrence(self, p, mem, state, proj, inter):
    """Luong attention without input feeding reads the decoder states but
    does not feed them: the layers run as the encoder's do (one scan each),
    then attention for all steps at once."""
    spec = self.spec
    cell = cells.get_cell(self.cell)
    gx = cell.finish_input(p["layer0"], proj)
    _, hs = cells.scan_projected(cell, p["layer0"], state.carries[0], gx, unroll=self.unroll)
    for layer in range(1, self.num_layers):
      x = hs.astype(self.compute_dtype)
      if inter is not None:
        x = x * inter[:, layer - 1]
      _, hs = cells.scan_cell(cell, p[f"layer{layer}"], state.carries[layer], x,
                              unroll=self.unroll)
    if self.attention == "none":
      return hs, None
    queries = jnp.swapaxes(hs, 0, 1)  # [batch, tgt_len, hidden], as bmm wants it
    context, weights = attn.attend_all(self.attention, p["attention"], mem.keys, mem.memory,
                                       mem.mask, queries)
    out = attentional_state(spec, p, context, queries)
    return jnp.swapaxes(out, 0, 1), jnp.swapaxes(weights, 0, 1)

  def _scheduled(self, p, mem, state, tgt_in_t, drop, tf_prob, rng):
    """Per-step path: each step reads gold with probability `tf_prob`."""
    spec = self.spec
    tgt_len, batch = tgt_in_t.shape
    k_coin, k_sample = jax.random.split(rng)
    use_gold = jax.random.uniform(k_coin, (tgt_len, batch)) < tf_prob
    use_gold = use_gold.at[0].set(True)  # the first input is always <sos>
    sample_keys = jax.random.split(k_sample, tgt_len)
    drop_xs = (None, None, None) if drop is None else (drop["emb"], drop["inter"], drop["out"])

    def body(carry, xs):
      state, prev_pred = carry
      gold_t, use_gold_t, key_t, (emb_drop, inter_t, out_drop) = xs
      tokens = jnp.where(use_gold_t, gold_t, prev_pred)
      proj_t = embedding_projection(spec, p, mem, tokens, emb_drop)
      state, out, weights = decoder_step(spec, p, mem, state, proj_t, inter_t)
      if out_drop is not None:
        out = out * out_drop
      logits = output_logits(p, out)
      if self.predictions == "sample":
        pred = jax.random.categorical(key_t, logits).astype(tokens.dtype)
      else:
        pred = jnp.argmax(logits, axis=-1).astype(tokens.dtype)
      return (state, pred), (logits, weights)

    init = (state, jnp.zeros((batch,), tgt_in_t.dtype))
    _, (logits, weights) = jax.lax.scan(
        body, init, (tgt_in_t, use_gold, sample_keys, drop_xs), unroll=self.unroll)
    gold = jnp.mean(use_gold[1:].astype(jnp.float32)) if tgt_len > 1 else jnp.ones(())
    return logits, weights, gold
