"""Free-running decoding: greedy, beam search and sampling; forced scoring.

Each decoder is one compiled program: the encoder, then a `jax.lax.while_loop`
over time steps that stops as soon as every sentence of the batch is done (and
at the maximum length at the latest). They work for every cell and attention
variant through `Seq2Seq.start` / `Seq2Seq.decode_step`.

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
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax.tokens import EOS_ID, PAD_ID, SOS_ID

LENGTH_PENALTIES = ("gnmt", "average")


class Hypotheses(NamedTuple):
  """Decoder output; N is 1 for greedy, the beam size or the number of samples.

  Attributes:
    tokens: `[batch, N, max_len]` int32, `<pad>` after each hypothesis's end.
    lengths: `[batch, N]` tokens produced, the `<eos>` included.
    scores: `[batch, N]` the ranking score (log-prob over the length penalty),
      best first for beam search.
    log_probs: `[batch, N]` the model's log-probability of `tokens[:lengths]`.
    attention: `[batch, N, max_len, src_len]` the attention weights of each
      produced token (None for a model without attention, or when not asked).
  """
  tokens: jax.Array
  lengths: jax.Array
  scores: jax.Array
  log_probs: jax.Array
  attention: jax.Array | None


def check_length_penalty(alpha: float, kind: str = "gnmt") -> None:
  if kind not in LENGTH_PENALTIES:
    raise ValueError(f"length penalty type {kind!r} is not valid; valid choices: "
                     f"{', '.join(LENGTH_PENALTIES)}")
  if not alpha >= 0.0:
    raise ValueError(f"length penalty alpha must be >= 0 (0 turns it off), got {alpha!r}")


def length_penalty(lengths: jax.Array, alpha, kind: str = "gnmt") -> jax.Array:
  """The divisor of a hypothesis's log-prob: gnmt `((5+len)/6)**alpha`, or `len**alpha`."""
  lengths = jnp.asarray(lengths, jnp.float32)
  base = (5.0 + lengths) / 6.0 if kind == "gnmt" else lengths
  return base ** jnp.asarray(alpha, jnp.float32)


def max_length(src_len: int, max_len_a: float, max_len_b: int) -> int:
  """The longest output allowed for sources of (padded) length `src_len`."""
  return max(1, int(math.floor(max_len_a * src_len + max_len_b)))


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


def _start(model, params, src):
  return model.apply({"params": params}, src,
                     method=lambda m, s: m.start(m.encode(s)))


def _step(model, params, mem, state, tokens):
  """Feeds `tokens [rows]`; returns `(state, log_probs [rows, vocab], weights)`."""
  state, logits, weights = model.apply({"params": params}, mem, state, tokens,
                                       method=lambda m, *a: m.decode_step(*a))
  return state, _log_probs(logits), weights


def _tracks_attention(model, with_attention):
  return with_attention and model.attention != "none"


# ----- greedy and sampling: one hypothesis per row -----

@functools.partial(jax.jit, static_argnames=("model", "max_len", "top_k_size", "sample",
                                             "with_attention", "penalty_type"))
def _single_path(model, params, src, rng, temperature, max_len_a, max_len_b, alpha, *,
                 max_len, top_k_size, sample, with_attention, penalty_type):
  batch, src_len = src.shape
  limits = _limits(src, max_len_a, max_len_b, max_len)
  mem, state = _start(model, params, src)
  track = _tracks_attention(model, with_attention)

  def choose(lp, key):
    if not sample:
      return top_k(lp, 1)[1][:, 0]
    scaled = lp / temperature
    if top_k_size:
      kth = jax.lax.top_k(scaled, top_k_size)[0][:, -1:]
      scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
    return jax.random.categorical(key, scaled, axis=-1)

  def body(carry):
    t, state, prev, tokens, log_prob, lengths, finished, weights_all = carry
    state, lp, weights = _step(model, params, mem, state, prev)
    tok = choose(lp, jax.random.fold_in(rng, t)).astype(jnp.int32)
    active = ~finished
    tokens = tokens.at[:, t].set(jnp.where(active, tok, PAD_ID))
    log_prob = log_prob + jnp.where(active, jnp.take_along_axis(lp, tok[:, None], 1)[:, 0], 0.0)
    lengths = lengths + active
    finished = finished | (tok == EOS_ID) | (t + 1 >= limits)
    if track:
      weights_all = weights_all.at[:, t].set(jnp.where(active[:, None], weights, 0.0))
    return t + 1, state, tok, tokens, log_prob, lengths, finished, weights_all

  def cond(carry):
    return (carry[0] < max_len) & ~jnp.all(carry[6])

  init = (jnp.zeros((), jnp.int32), state, jnp.full((batch,), SOS_ID, jnp.int32),
          jnp.full((batch, max_len), PAD_ID, jnp.int32), jnp.zeros((batch,), jnp.float32),
          jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), bool),
          jnp.zeros((batch, max_len, src_len), jnp.float32) if track else None)
  _, _, _, tokens, log_prob, lengths, _, weights_all = jax.lax.while_loop(cond, body, init)
  scores = log_prob / length_penalty(lengths, alpha, penalty_type)
  return Hypotheses(tokens=tokens[:, None], lengths=lengths[:, None], scores=scores[:, None],
                    log_probs=log_prob[:, None],
                    attention=None if weights_all is None else weights_all[:, None])


def greedy(model, params, src, *, max_len_a: float = 2.0, max_len_b: int = 10,
           length_penalty_alpha: float = 0.0, penalty_type: str = "gnmt",
           with_attention: bool = True) -> Hypotheses:
  """Greedy decoding of `src [batch, src_len]`: the most probable token at every step.

  The length penalty only changes the reported `scores`.
  """
  check_length_penalty(length_penalty_alpha, penalty_type)
  return _single_path(model, params, jnp.asarray(src), jax.random.PRNGKey(0),
                      1.0, max_len_a, max_len_b, length_penalty_alpha,
                      max_len=max_length(src.shape[1], max_len_a, max_len_b), top_k_size=0,
                      sample=False, with_attention=with_attention,
                      penalty_type=penalty_type)


def sample(model, params, src, rng, *, temperature: float = 1.0, top_k: int = 0,
           num_samples: int = 1, max_len_a: float = 2.0, max_len_b: int = 10,
           length_penalty_alpha: float = 0.0, penalty_type: str = "gnmt",
           with_attention: bool = True) -> Hypotheses:
  """Ancestral sampling from `softmax(log_probs / temperature)`, optionally top-k.

  `num_samples` independent samples a sentence (N of `Hypotheses`), in the
  order drawn; `log_probs` are the model's own (temperature 1, no top-k).
  """
  check_length_penalty(length_penalty_alpha, penalty_type)
  if not temperature > 0.0:
    raise ValueError(f"temperature must be > 0 (use greedy for 0), got {temperature!r}")
  if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
    raise ValueError(f"top_k must be an int >= 0 (0: the whole vocabulary), got {top_k!r}")
  src = jnp.asarray(src)
  batch = src.shape[0]
  tiled = jnp.repeat(src, num_samples, axis=0)
  out = _single_path(model, params, tiled, rng, temperature, max_len_a, max_len_b,
                     length_penalty_alpha, max_len=max_length(src.shape[1], max_len_a, max_len_b),
                     top_k_size=top_k, sample=True, with_attention=with_attention,
                     penalty_type=penalty_type)
  return jax.tree.map(lambda x: x.reshape(batch, num_samples, *x.shape[2:]), out)


# ----- beam search -----

def _gather_beams(x, beams):
  """`x [batch, K, ...]`, `beams [batch, M]` -> `[batch, M, ...]`."""
  idx = beams.reshape(beams.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_len",
                                             "with_attention", "penalty_type"))
def _beam_search(model, params, src, max_len_a, max_len_b, alpha, *, beam_size, max_len,
                 with_attention, penalty_type):
  batch, src_len = src.shape
  k = beam_size
  limits = _limits(src, max_len_a, max_len_b, max_len)
  best_penalty = length_penalty(limits, alpha, penalty_type)  # the largest a hypothesis can get
  mem, state = _start(model, params, src)
  # Every row of the decoder works on one hypothesis: [batch * K, ...].
  mem, state = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), (mem, state))
  track = _tracks_attention(model, with_attention)
  neg_inf = jnp.float32(-jnp.inf)

  def body(carry):
    (t, state, prev, alive_lp, alive_seq, alive_w,
     fin_seq, fin_score, fin_lp, fin_len, fin_w, done) = carry
    state, lp, weights = _step(model, params, mem, state, prev)
    vocab = lp.shape[-1]
    cand = alive_lp[:, :, None] + lp.reshape(batch, k, vocab)
    # The K best continuations of the K hypotheses (OpenNMT's beam: with K=1,
    # exactly greedy). Those that end leave the beam for the finished pool,
    # and their slots are refilled by the next step's top K.
    top_lp, top_idx = top_k(cand.reshape(batch, k * vocab), k)
    parent, tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seq = _gather_beams(alive_seq, parent).at[:, :, t].set(tok)
    w = None
    if track:
      w = _gather_beams(alive_w, parent).at[:, :, t].set(
          _gather_beams(weights.reshape(batch, k, src_len), parent))
    ends = (tok == EOS_ID) | (t + 1 >= limits)[:, None]
    live = jnp.isfinite(top_lp) & ~done[:, None]  # a done sentence adds nothing more
    # Finished pool: the K best of old and new by score.
    new_score = jnp.where(ends & live, top_lp / length_penalty(t + 1, alpha, penalty_type),
                          neg_inf)
    pool_score = jnp.concatenate([fin_score, new_score], 1)
    fin_score, pick = jax.lax.top_k(pool_score, k)
    fin_seq = _gather_beams(jnp.concatenate([fin_seq, seq], 1), pick)
    fin_lp = _gather_beams(jnp.concatenate([fin_lp, top_lp], 1), pick)
    fin_len = _gather_beams(
        jnp.concatenate([fin_len, jnp.full((batch, k), t + 1, jnp.int32)], 1), pick)
    if track:
      fin_w = _gather_beams(jnp.concatenate([fin_w, w], 1), pick)
    # The beam: the candidates that did not end.
    alive_lp = jnp.where(ends | ~live, neg_inf, top_lp)
    rows = (jnp.arange(batch)[:, None] * k + parent).reshape(-1)
    state = jax.tree.map(lambda x: x[rows], state)
    # Done when no live hypothesis can still beat the K-th finished one.
    bound = jnp.max(alive_lp, axis=1) / best_penalty
    done = done | (t + 1 >= limits) | (fin_score[:, -1] >= bound)
    return (t + 1, state, tok.reshape(-1), alive_lp, seq, w,
            fin_seq, fin_score, fin_lp, fin_len, fin_w, done)

  def cond(carry):
    return (carry[0] < max_len) & ~jnp.all(carry[-1])

  seqs = jnp.full((batch, k, max_len), PAD_ID, jnp.int32)
  w0 = jnp.zeros((batch, k, max_len, src_len), jnp.float32) if track else None
  init = (jnp.zeros((), jnp.int32), state, jnp.full((batch * k,), SOS_ID, jnp.int32),
          jnp.full((batch, k), neg_inf).at[:, 0].set(0.0),  # one start hypothesis
          seqs, w0, seqs, jnp.full((batch, k), neg_inf), jnp.full((batch, k), neg_inf),
          jnp.zeros((batch, k), jnp.int32), w0, jnp.zeros((batch,), bool))
  out = jax.lax.while_loop(cond, body, init)
  fin_seq, fin_score, fin_lp, fin_len, fin_w = out[6:11]
  return Hypotheses(tokens=fin_seq, lengths=fin_len, scores=fin_score, log_probs=fin_lp,
                    attention=fin_w)


def beam_search(model, params, src, *, beam_size: int = 5, length_penalty_alpha: float = 0.6,
                penalty_type: str = "gnmt", max_len_a: float = 2.0, max_len_b: int = 10,
                with_attention: bool = True) -> Hypotheses:
  """Beam search over `src [batch, src_len]`; returns the `beam_size` best, best first.

  A hypothesis that produces `<eos>` (or reaches its maximum length) is
  finished and never extended; a sentence is done when no hypothesis in its
  beam can still beat its K-th finished one, even with the most favourable
  length penalty.
  """
  check_length_penalty(length_penalty_alpha, penalty_type)
  if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
    raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
  return _beam_search(model, params, jnp.asarray(src), max_len_a, max_len_b,
                      length_penalty_alpha, beam_size=beam_size,
                      max_len=max_length(src.shape[1], max_len_a, max_len_b),
                      with_attention=with_attention, penalty_type=penalty_type)


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
  logits = model.apply({"params": params}, src, tgt)["logits"]
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  per_token = jnp.take_along_axis(lp, tgt[..., None], axis=-1)[..., 0]
  per_token = jnp.where(tgt != PAD_ID, per_token, 0.0)
  return per_token, jnp.sum(per_token, axis=1)


# ----- whole corpora -----

def batches(arrays, batch_size: int):
  """Fixed-shape batches of numpy arrays (the last one padded with copies of
  row 0, so one compiled shape serves all), and how many rows are real."""
  n = len(arrays[0])
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    real = len(chunk[0])
    if real < batch_size:
      chunk = [np.concatenate([c, np.repeat(a[:1], batch_size - real, 0)])
               for c, a in zip(chunk, arrays)]
    yield chunk, real


def decode_corpus(model, params, src: np.ndarray, batch_size: int, beam_size: int = 1,
                  **kwargs) -> Hypotheses:
  """Greedy (`beam_size` 1) or beam search over `src [N, src_len]` in batches.

  Returns numpy `Hypotheses` over all N sentences; `kwargs` go to `greedy` /
  `beam_search`.
  """
  batch_size = max(1, min(batch_size, len(src)))
  parts = []
  for (chunk,), real in batches([src], batch_size):
    if beam_size == 1:
      out = greedy(model, params, chunk, **kwargs)
    else:
      out = beam_search(model, params, chunk, beam_size=beam_size, **kwargs)
    parts.append(jax.tree.map(lambda x, r=real: np.asarray(x)[:r], out))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
