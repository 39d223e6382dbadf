"""How to decode (`DecodeOptions`) and what a decoder returns (`Hypotheses`);
the length penalty and the length limit (see `decoding` for the rules)."""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import config_schema

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


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to decode, checked on construction; the field names are `config.eval`'s.

  Attributes:
    beam_size: 1 is greedy, more is beam search.
    length_penalty: alpha of the length penalty; 0 turns it off (for greedy
      and sampling it only changes the reported scores).
    length_penalty_type: `gnmt` or `average`, see `length_penalty`.
    max_len_a, max_len_b: at most `floor(a * source length + b)` output tokens.
    temperature: > 0 samples instead of searching.
    top_k: sampling from the k most probable tokens only (0: all).
    top_p: sampling from the smallest set of most probable tokens whose
      probability reaches p (nucleus sampling, Holtzman et al. 2020; 1: all).
    min_len: no `<eos>` before this many tokens (fairseq's `--min-len`).
    no_repeat_ngram: no n-gram of this many tokens twice in an output (0: off).
    repetition_penalty: a token already in the output has its log-probability
      times this (>= 1; p ** penalty, Keskar et al. 2019's CTRL rule on log-probs).
    num_samples: samples a sentence.
    with_attention: return the attention weights of every produced token.

  The constraints (`constrain`) apply to greedy, beam search and sampling; the
  scores and log-probs a decoder reports are then those of the constrained
  distribution (equal to the model's but for the repetition penalty).
  """
  # The fields of `config.eval` take its defaults (config_schema.Eval).
  beam_size: int = config_schema.Eval.beam_size
  length_penalty: float = config_schema.Eval.length_penalty
  length_penalty_type: str = config_schema.Eval.length_penalty_type
  max_len_a: float = config_schema.Eval.max_len_a
  max_len_b: int = config_schema.Eval.max_len_b
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = config_schema.Eval.top_p
  min_len: int = config_schema.Eval.min_len
  no_repeat_ngram: int = config_schema.Eval.no_repeat_ngram
  repetition_penalty: float = config_schema.Eval.repetition_penalty
  num_samples: int = 1
  with_attention: bool = True

  def __post_init__(self):
    if self.length_penalty_type not in LENGTH_PENALTIES:
      raise ValueError(f"length_penalty_type={self.length_penalty_type!r} is not valid; "
                       f"valid choices: {', '.join(LENGTH_PENALTIES)}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1] (1: off), got {self.top_p!r}")
    if not self.repetition_penalty >= 1.0:
      raise ValueError(f"repetition_penalty must be >= 1 (1: off), got "
                       f"{self.repetition_penalty!r}")
    for name in ("length_penalty", "max_len_a", "temperature", "top_p", "repetition_penalty"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
          or not 0.0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
      object.__setattr__(self, name, float(value))  # one compiled program for 5 and 5.0
    for name, low in (("beam_size", 1), ("max_len_b", -10**9), ("top_k", 0),
                      ("num_samples", 1), ("min_len", 0), ("no_repeat_ngram", 0)):
      value = getattr(self, name)
      if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}"
                         if name != "max_len_b" else f"max_len_b must be an int, got {value!r}")
      object.__setattr__(self, name, int(value))

  @classmethod
  def from_eval_config(cls, cfg_eval, **overrides) -> "DecodeOptions":
    """The options of an `eval` config section, with `overrides` on top;
    TypeError or ValueError name the field."""
    fields = ("beam_size", "length_penalty", "length_penalty_type", "max_len_a", "max_len_b",
              "top_p", "min_len", "no_repeat_ngram", "repetition_penalty")
    values = {f: getattr(cfg_eval, f) for f in fields}
    return cls(**{**values, **overrides})


  @property
  def constraints(self) -> tuple:
    """`(min_len, no_repeat_ngram, repetition_penalty)` for `constrain`, () when all off
    (then decoding compiles without them)."""
    values = (self.min_len, self.no_repeat_ngram, self.repetition_penalty)
    return () if values == (0, 0, 1.0) else values


def constrain(lp: jax.Array, tokens: jax.Array, t, eos_id: int, pad_id: int,
              constraints: tuple) -> jax.Array:
  """Log-probs `lp [rows, vocab]` of the token at step `t` (from 0) after the output
  `tokens [rows, max_len]` (its first `t` set), with `DecodeOptions.constraints`
  (static): `<eos>` banned before `min_len`, the log-probs of tokens already out
  times `repetition_penalty`, every token that would repeat an n-gram banned (n =
  `no_repeat_ngram`). Banned tokens get -inf; nothing is renormalised."""
  if not constraints:
    return lp
  min_len, n, repetition_penalty = constraints
  rows, max_len = tokens.shape
  row = jnp.arange(rows)[:, None]
  pos = jnp.arange(max_len)[None, :]
  out = jnp.asarray(tokens)
  if min_len:
    lp = lp.at[:, eos_id].set(jnp.where(t < min_len, -jnp.inf, lp[:, eos_id]))
  if repetition_penalty != 1.0:
    seen = jnp.zeros(lp.shape, bool).at[row, jnp.where(pos < t, out, pad_id)].set(True)
    lp = jnp.where(seen & jnp.isfinite(lp), lp * repetition_penalty, lp)
  if n:  # window j: out[j:j+n-1] equals the last n-1 tokens -> out[j+n-1] banned
    match = (pos + n - 1 < t) & (t >= n - 1)
    for i in range(n - 1):
      last = jnp.take_along_axis(out, jnp.broadcast_to(jnp.maximum(t - n + 1 + i, 0),
                                                        (rows, 1)), axis=1)
      match &= jnp.roll(out, -i, axis=1) == last
    lp = lp.at[row, jnp.where(match, jnp.roll(out, -(n - 1), axis=1), pad_id)].set(-jnp.inf)
  return lp


def nucleus(logits: jax.Array, top_p) -> jax.Array:
  """`logits [rows, vocab]` outside the smallest set of most probable tokens whose
  probability reaches `top_p` set to -inf (the most probable always stays)."""
  ordered = jnp.sort(logits, axis=-1)[:, ::-1]
  p = jax.nn.softmax(ordered, axis=-1)
  before = jnp.cumsum(p, axis=-1) - p  # the probability of the tokens above each
  kept = jnp.sum(before < top_p, axis=-1, keepdims=True)  # >= 1
  threshold = jnp.take_along_axis(ordered, kept - 1, axis=-1)
  return jnp.where(logits < threshold, -jnp.inf, logits)


def length_penalty(lengths: jax.Array, alpha, kind: str = "gnmt") -> jax.Array:
  """The divisor of a hypothesis's log-prob: gnmt `((5+len)/6)**alpha`, or `len**alpha`."""
  lengths = jnp.asarray(lengths, jnp.float32)
  base = (5.0 + lengths) / 6.0 if kind == "gnmt" else lengths
  return base ** jnp.asarray(alpha, jnp.float32)


def max_length(src_len: int, max_len_a: float, max_len_b: int) -> int:
  """The longest output allowed for sources of (padded) length `src_len`."""
  return max(1, int(math.floor(max_len_a * src_len + max_len_b)))
