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
    num_samples: samples a sentence.
    with_attention: return the attention weights of every produced token.
  """
  # The fields of `config.eval` take its defaults (config_schema.Eval).
  beam_size: int = config_schema.Eval.beam_size
  length_penalty: float = config_schema.Eval.length_penalty
  length_penalty_type: str = config_schema.Eval.length_penalty_type
  max_len_a: float = config_schema.Eval.max_len_a
  max_len_b: int = config_schema.Eval.max_len_b
  temperature: float = 0.0
  top_k: int = 0
  num_samples: int = 1
  with_attention: bool = True

  def __post_init__(self):
    if self.length_penalty_type not in LENGTH_PENALTIES:
      raise ValueError(f"length_penalty_type={self.length_penalty_type!r} is not valid; "
                       f"valid choices: {', '.join(LENGTH_PENALTIES)}")
    for name in ("length_penalty", "max_len_a", "temperature"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
          or not 0.0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
      object.__setattr__(self, name, float(value))  # one compiled program for 5 and 5.0
    for name, low in (("beam_size", 1), ("max_len_b", -10**9), ("top_k", 0),
                      ("num_samples", 1)):
      value = getattr(self, name)
      if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}"
                         if name != "max_len_b" else f"max_len_b must be an int, got {value!r}")
      object.__setattr__(self, name, int(value))

  @classmethod
  def from_eval_config(cls, cfg_eval, **overrides) -> "DecodeOptions":
    """The options of an `eval` config section, with `overrides` on top;
    TypeError or ValueError name the field."""
    fields = ("beam_size", "length_penalty", "length_penalty_type", "max_len_a", "max_len_b")
    values = {f: getattr(cfg_eval, f) for f in fields}
    return cls(**{**values, **overrides})


def length_penalty(lengths: jax.Array, alpha, kind: str = "gnmt") -> jax.Array:
  """The divisor of a hypothesis's log-prob: gnmt `((5+len)/6)**alpha`, or `len**alpha`."""
  lengths = jnp.asarray(lengths, jnp.float32)
  base = (5.0 + lengths) / 6.0 if kind == "gnmt" else lengths
  return base ** jnp.asarray(alpha, jnp.float32)


def max_length(src_len: int, max_len_a: float, max_len_b: int) -> int:
  """The longest output allowed for sources of (padded) length `src_len`."""
  return max(1, int(math.floor(max_len_a * src_len + max_len_b)))
