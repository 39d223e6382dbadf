"""Free-running decoding: greedy, beam search and sampling; forced scoring.

Each decoder is one compiled program: the encoder, then a `jax.lax.while_loop`
over time steps that stops as soon as every sentence of the batch is done (and
at the maximum length at the latest). They see the model only through its
interface (`models.interface.Seq2SeqModel`: `encode`, `decoder_start`,
`decode_step`, `has_attention`), so every family decodes the same way. How to
decode (search, limits, penalty, sampling) is one `DecodeOptions`.

Token log-probabilities are the model's `log_softmax` over the whole target
vocabulary; `<pad>` and `<sos>` (never targets) are then excluded without
renormalising, so a hypothesis's log-probability is exactly what forced decoding
(`forced_log_probs`) gives the same tokens.

Maximum length: sentence b may produce at most
`floor(max_len_a * src_len[b] + max_len_b)` tokens (its `<eos>` included); a
hypothesis that reaches it without `<eos>` ends there.

Length penalty (beam search ranks finished hypotheses by `log_prob / lp(len)`,
`len` counting the `<eos>`): `gnmt` `((5 + len) / 6) ** alpha` (Wu et al. 2016)
or `average` `len ** alpha` (alpha 1: the per-token average); alpha 0 is off.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# The options and the output, re-exported: `decoding.DecodeOptions` is the API.
from seq2seq_jax.decode_options import (  # noqa: F401
  LENGTH_PENALTIES,
  DecodeOptions,
  Hypotheses,
  constrain,
  length_penalty,
  max_length,
  nucleus,
)
from seq2seq_jax.tokens import EOS_ID, PAD_ID, SOS_ID


def _limits(src, max_len_a, max_len_b, max_len):
  """`[batch]` per-sentence maximum output lengths."""
  src_len = jnp.sum(src != PAD_ID, axis=1).astype(jnp.float32)
  limit = jnp.floor(max_len_a * src_len + max_len_b).astype(jnp.int32)
  return jnp.clip(limit, 1, max_len)


_NEVER_OUTPUT = np.array([PAD_ID, SOS_ID])


def _log_probs(logits: jax.Array) -> jax.Array:
  """`[..., vocab]` log-softmax, with `<pad>` and `<sos>` set to -inf afterwards.

  Written as `logits - logsumexp(logits)`: XLA's CPU backend fuses that with
  the output projection, but not `jax.nn.log_softmax` (about 20% of a beam
  step at the reference size).
  """
  logits = logits.astype(jnp.float32)
  lp = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  never = jnp.zeros(lp.shape[-1], bool).at[_NEVER_OUTPUT].set(True)
  return jnp.where(never, -jnp.inf, lp)


def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k` over the last axis of `x [rows, n]`, in two stages.

  The k largest entries of a row lie in the k blocks (of 32 neighbours) with
  the largest maxima, so a top-k over the block maxima and then over those k
  blocks' entries gives the exact result, about twice as fast as one top-k
  over `n` on a CPU. Among equal values the first in the row comes first
  when k is 1 (so greedy is `argmax`); otherwise the order of ties may differ
  from `jax.lax.top_k`'s.
  """
  rows, n = x.shape
  block = next((b for b in (32, 16, 8, 4) if n % b == 0 and n // b >= k), 0)
  if not block:
    return jax.lax.top_k(x, k)
  blocks = x.reshape(rows, n // block, block)
  _, best_blocks = jax.lax.top_k(jnp.max(blocks, axis=-1), k)
  cand = jnp.take_along_axis(blocks, best_blocks[:, :, None], axis=1).reshape(rows, k * block)
  values, j = jax.lax.top_k(cand, k)
  return values, jnp.take_along_axis(best_blocks, j // block, axis=1) * block + j % block


def _start(model, params, src, max_len: int):
  """The decoder's `(memory, state)` for `src [batch, src_len]` and outputs of
  at most `max_len` tokens."""
  return model.apply({"params": params}, src,
                     method=lambda m, s: m.decoder_start(m.encode(s), max_len))


def _step(model, params, mem, state, tokens):
  """Feeds `tokens [rows]`; returns `(state, log_probs [rows, vocab], weights)`."""
  state, logits, weights = model.apply({"params": params}, mem, state, tokens,
                                       method="decode_step")
  return state, _log_probs(logits), weights


def _tracks_attention(model, with_attention):
  return with_attention and model.has_attention


# ----- greedy and sampling: one hypothesis per row -----

class SinglePathState(NamedTuple):
  """The while-loop state of greedy decoding and sampling."""
  t: jax.Array  # [] int32, steps taken
  decoder: Any  # the model's decoder state, rows [batch]
  prev: jax.Array  # [batch] int32, the token fed at the next step
  tokens: jax.Array  # [batch, max_len] int32, <pad> after each sentence's end
  log_prob: jax.Array  # [batch] float32
  lengths: jax.Array  # [batch] int32, the <eos> included
  finished: jax.Array  # [batch] bool
  attention: jax.Array | None  # [batch, max_len, src_len], or None when not tracked


@functools.partial(jax.jit, static_argnames=("model", "max_len", "top_k_size", "sample",
                                             "with_attention", "penalty_type", "top_p",
                                             "constraints"))
def _single_path(model, params, src, rng, temperature, max_len_a, max_len_b, alpha, *,
                 max_len, top_k_size, sample, with_attention, penalty_type, top_p=1.0,
                 constraints=()):
  batch, src_len = src.shape
  limits = _limits(src, max_len_a, max_len_b, max_len)
  mem, decoder_state = _start(model, params, src, max_len)
  track = _tracks_attention(model, with_attention)

  def choose(lp, key):
    if not sample:
      return top_k(lp, 1)[1][:, 0]
    scaled = lp / temperature
    if top_k_size:
      kth = jax.lax.top_k(scaled, top_k_size)[0][:, -1:]
      scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
    if top_p < 1.0:
      scaled = nucleus(scaled, top_p)
    return jax.random.categorical(key, scaled, axis=-1)

  def body(s: SinglePathState) -> SinglePathState:
    decoder, lp, weights = _step(model, params, mem, s.decoder, s.prev)
    lp = constrain(lp, s.tokens, s.t, EOS_ID, PAD_ID, constraints)
    tok = choose(lp, jax.random.fold_in(rng, s.t)).astype(jnp.int32)
    active = ~s.finished
    attention = s.attention
    if track:
      attention = attention.at[:, s.t].set(jnp.where(active[:, None], weights, 0.0))
    return SinglePathState(
        t=s.t + 1, decoder=decoder, prev=tok,
        tokens=s.tokens.at[:, s.t].set(jnp.where(active, tok, PAD_ID)),
        log_prob=s.log_prob + jnp.where(
            active, jnp.take_along_axis(lp, tok[:, None], 1)[:, 0], 0.0),
        lengths=s.lengths + active,
        finished=s.finished | (tok == EOS_ID) | (s.t + 1 >= limits),
        attention=attention)

  def cond(s: SinglePathState):
    return (s.t < max_len) & ~jnp.all(s.finished)

  init = SinglePathState(
      t=jnp.zeros((), jnp.int32), decoder=decoder_state,
      prev=jnp.full((batch,), SOS_ID, jnp.int32),
      tokens=jnp.full((batch, max_len), PAD_ID, jnp.int32),
      log_prob=jnp.zeros((batch,), jnp.float32), lengths=jnp.zeros((batch,), jnp.int32),
      finished=jnp.zeros((batch,), bool),
      attention=jnp.zeros((batch, max_len, src_len), jnp.float32) if track else None)
  out = jax.lax.while_loop(cond, body, init)
  scores = out.log_prob / length_penalty(out.lengths, alpha, penalty_type)
  return Hypotheses(tokens=out.tokens[:, None], lengths=out.lengths[:, None],
                    scores=scores[:, None], log_probs=out.log_prob[:, None],
                    attention=None if out.attention is None else out.attention[:, None])


_GREEDY = DecodeOptions(length_penalty=0.0)


def greedy(model, params, src, options: DecodeOptions = _GREEDY) -> Hypotheses:
  """Greedy decoding of `src [batch, src_len]`: the most probable token at every step.

  The length penalty only changes the reported `scores` (off by default).
  """
  return _single_path(model, params, jnp.asarray(src), jax.random.PRNGKey(0),
                      1.0, options.max_len_a, options.max_len_b, options.length_penalty,
                      max_len=max_length(src.shape[1], options.max_len_a, options.max_len_b),
                      top_k_size=0, sample=False, with_attention=options.with_attention,
                      penalty_type=options.length_penalty_type,
                      constraints=options.constraints)


def sample(model, params, src, rng, options: DecodeOptions) -> Hypotheses:
  """Ancestral sampling from `softmax(log_probs / options.temperature)`, optionally top-k.

  `options.num_samples` independent samples a sentence (N of `Hypotheses`), in
  the order drawn; `log_probs` are the model's own (temperature 1, no top-k).
  """
  if not options.temperature > 0.0:
    raise ValueError(f"temperature must be > 0 to sample (use greedy for 0), got "
                     f"{options.temperature!r}")
  src = jnp.asarray(src)
  batch, n = src.shape[0], options.num_samples
  tiled = jnp.repeat(src, n, axis=0)
  out = _single_path(model, params, tiled, rng, options.temperature, options.max_len_a,
                     options.max_len_b, options.length_penalty,
                     max_len=max_length(src.shape[1], options.max_len_a, options.max_len_b),
                     top_k_size=options.top_k, sample=True,
                     with_attention=options.with_attention,
                     penalty_type=options.length_penalty_type, top_p=options.top_p,
                     constraints=options.constraints)
  return jax.tree.map(lambda x: x.reshape(batch, n, *x.shape[2:]), out)


# ----- beam search -----

class BeamState(NamedTuple):
  """The while-loop state of beam search; K is the beam size."""
  t: jax.Array  # [] int32, steps taken
  decoder: Any  # the model's decoder state, rows [batch * K], one hypothesis each
  prev: jax.Array  # [batch * K] int32, the token fed at the next step
  alive_log_prob: jax.Array  # [batch, K], -inf for an empty slot
  alive_tokens: jax.Array  # [batch, K, max_len] int32
  alive_attention: jax.Array | None  # [batch, K, max_len, src_len]
  finished_tokens: jax.Array  # [batch, K, max_len] int32, best first
  finished_scores: jax.Array  # [batch, K] log-prob over length penalty, -inf when empty
  finished_log_prob: jax.Array  # [batch, K]
  finished_lengths: jax.Array  # [batch, K] int32, the <eos> included
  finished_attention: jax.Array | None  # [batch, K, max_len, src_len]
  done: jax.Array  # [batch] bool: no alive hypothesis can still enter the finished K


def _gather_beams(x, beams):
  """`x [batch, K, ...]`, `beams [batch, M]` -> `[batch, M, ...]`."""
  idx = beams.reshape(beams.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_len",
                                             "with_attention", "penalty_type", "constraints"))
def _beam_search(model, params, src, max_len_a, max_len_b, alpha, *, beam_size, max_len,
                 with_attention, penalty_type, constraints=()):
  batch, src_len = src.shape
  k = beam_size
  limits = _limits(src, max_len_a, max_len_b, max_len)
  best_penalty = length_penalty(limits, alpha, penalty_type)  # the largest a hypothesis can get
  mem, decoder_state = _start(model, params, src, max_len)
  # Every row of the decoder works on one hypothesis: [batch * K, ...].
  mem, decoder_state = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), (mem, decoder_state))
  track = _tracks_attention(model, with_attention)
  neg_inf = jnp.float32(-jnp.inf)

  def body(s: BeamState) -> BeamState:
    t = s.t
    decoder, lp, weights = _step(model, params, mem, s.decoder, s.prev)
    lp = constrain(lp, s.alive_tokens.reshape(batch * k, -1), t, EOS_ID, PAD_ID, constraints)
    vocab = lp.shape[-1]
    cand = s.alive_log_prob[:, :, None] + lp.reshape(batch, k, vocab)
    # The K best continuations of the K hypotheses (OpenNMT's beam: with K=1,
    # exactly greedy). Those that end leave the beam for the finished pool,
    # and their slots are refilled by the next step's top K.
    top_lp, top_idx = top_k(cand.reshape(batch, k * vocab), k)
    parent, tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seq = _gather_beams(s.alive_tokens, parent).at[:, :, t].set(tok)
    w = None
    if track:
      w = _gather_beams(s.alive_attention, parent).at[:, :, t].set(
          _gather_beams(weights.reshape(batch, k, src_len), parent))
    ends = (tok == EOS_ID) | (t + 1 >= limits)[:, None]
    live = jnp.isfinite(top_lp) & ~s.done[:, None]  # a done sentence adds nothing more
    # Finished pool: the K best of old and new by score.
    new_score = jnp.where(ends & live, top_lp / length_penalty(t + 1, alpha, penalty_type),
                          neg_inf)
    fin_score, pick = jax.lax.top_k(jnp.concatenate([s.finished_scores, new_score], 1), k)
    pool = lambda old, new: _gather_beams(jnp.concatenate([old, new], 1), pick)
    fin_w = pool(s.finished_attention, w) if track else None
    # The beam: the candidates that did not end.
    alive_lp = jnp.where(ends | ~live, neg_inf, top_lp)
    rows = (jnp.arange(batch)[:, None] * k + parent).reshape(-1)
    # Done when no live hypothesis can still beat the K-th finished one.
    bound = jnp.max(alive_lp, axis=1) / best_penalty
    return BeamState(
        t=t + 1, decoder=jax.tree.map(lambda x: x[rows], decoder), prev=tok.reshape(-1),
        alive_log_prob=alive_lp, alive_tokens=seq, alive_attention=w,
        finished_tokens=pool(s.finished_tokens, seq), finished_scores=fin_score,
        finished_log_prob=pool(s.finished_log_prob, top_lp),
        finished_lengths=pool(s.finished_lengths, jnp.full((batch, k), t + 1, jnp.int32)),
        finished_attention=fin_w,
        done=s.done | (t + 1 >= limits) | (fin_score[:, -1] >= bound))

  def cond(s: BeamState):
    return (s.t < max_len) & ~jnp.all(s.done)

  seqs = jnp.full((batch, k, max_len), PAD_ID, jnp.int32)
  w0 = jnp.zeros((batch, k, max_len, src_len), jnp.float32) if track else None
  init = BeamState(
      t=jnp.zeros((), jnp.int32), decoder=decoder_state,
      prev=jnp.full((batch * k,), SOS_ID, jnp.int32),
      alive_log_prob=jnp.full((batch, k), neg_inf).at[:, 0].set(0.0),  # one start hypothesis
      alive_tokens=seqs, alive_attention=w0, finished_tokens=seqs,
      finished_scores=jnp.full((batch, k), neg_inf),
      finished_log_prob=jnp.full((batch, k), neg_inf),
      finished_lengths=jnp.zeros((batch, k), jnp.int32), finished_attention=w0,
      done=jnp.zeros((batch,), bool))
  out = jax.lax.while_loop(cond, body, init)
  return Hypotheses(tokens=out.finished_tokens, lengths=out.finished_lengths,
                    scores=out.finished_scores, log_probs=out.finished_log_prob,
                    attention=out.finished_attention)


def beam_search(model, params, src, options: DecodeOptions) -> Hypotheses:
  """Beam search over `src [batch, src_len]`; returns the `options.beam_size` best, best first.

  A hypothesis that produces `<eos>` (or reaches its maximum length) is
  finished and never extended; a sentence is done when no hypothesis in its
  beam can still beat its K-th finished one, even with the most favourable
  length penalty.
  """
  return _beam_search(model, params, jnp.asarray(src), options.max_len_a, options.max_len_b,
                      options.length_penalty, beam_size=options.beam_size,
                      max_len=max_length(src.shape[1], options.max_len_a, options.max_len_b),
                      with_attention=options.with_attention,
                      penalty_type=options.length_penalty_type,
                      constraints=options.constraints)


def decode(model, params, src, options: DecodeOptions, rng=None) -> Hypotheses:
  """Sampling when `options.temperature` > 0 (needs `rng`), greedy when
  `options.beam_size` is 1, else beam search."""
  if options.temperature > 0:
    if rng is None:
      raise ValueError("sampling (temperature > 0) needs an rng key")
    return sample(model, params, src, rng, options)
  if options.beam_size == 1:
    return greedy(model, params, src, options)
  return beam_search(model, params, src, options)


# ----- forced decoding -----

@functools.partial(jax.jit, static_argnames=("model",))
def forced_log_probs(model, params, src, tgt):
  """The model's log-probability of `tgt` given `src`, teacher-forced.

  Args:
    src: `[batch, src_len]`.
    tgt: `[batch, tgt_len]`, each sentence's tokens (normally ending in
      `<eos>`), `<pad>` after.

  Returns:
    `(per_token [batch, tgt_len], per_sentence [batch])`, 0 on padding.
  """
  logits = model.apply({"params": params}, src, tgt).logits
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  per_token = jnp.take_along_axis(lp, tgt[..., None], axis=-1)[..., 0]
  per_token = jnp.where(tgt != PAD_ID, per_token, 0.0)
  return per_token, jnp.sum(per_token, axis=1)
