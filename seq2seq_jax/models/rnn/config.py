"""The RNN family's hyperparameters: one frozen struct that every layer reads."""

import dataclasses

import jax.numpy as jnp

from seq2seq_jax.models.checks import check_choice, check_int
from seq2seq_jax.models.rnn import attention as attn
from seq2seq_jax.models.rnn import cells

DECODER_INITS = ("last", "last_state", "learned", "zero")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "float64": jnp.float64}  # float64 needs jax_enable_x64; for gradient checks
PREDICTIONS = ("argmax", "sample")


@dataclasses.dataclass(frozen=True)
class RNNConfig:
  """`config.model` of the `rnn` family, checked on construction.

  Field names are the config's (`--config.model.cell=gru`); the vocabulary
  sizes come from the data.
  """
  src_vocab_size: int
  tgt_vocab_size: int
  cell: str = "lstm"  # a name in cells.CELLS
  attention: str = "dot"  # "none" or a name in attention.SCORES
  embed_dim: int = 256
  hidden_dim: int = 512
  num_layers: int = 1
  bidirectional: bool = False  # hidden_dim // 2 units a direction
  reverse_source: bool = False
  input_feeding: bool = False
  context_every_step: bool = False  # the encoder summary is an input of every step
  decoder_init: str = "last"  # see decoder.initial_carries
  attention_dim: int = 0  # concat / additive score size; 0 means hidden_dim
  dropout: float = 0.0
  dtype: str = "float32"  # of the matmuls; carries and logits stay float32
  predictions: str = "argmax"  # what free-running training steps feed back
  unroll: int = 1  # jax.lax.scan unroll of every time loop

  def __post_init__(self):
    if self.cell not in cells.CELLS:
      raise ValueError(f"model.cell={self.cell!r} is not valid; valid cells: "
                       f"{', '.join(cells.CELLS)}")
    check_choice("attention", self.attention, ("none", *attn.SCORES))
    check_choice("decoder_init", self.decoder_init, DECODER_INITS)
    check_choice("dtype", self.dtype, tuple(DTYPES))
    check_choice("predictions", self.predictions, PREDICTIONS)
    for name in ("src_vocab_size", "tgt_vocab_size", "embed_dim", "hidden_dim",
                 "num_layers", "unroll"):
      check_int(name, getattr(self, name), 1)
    check_int("attention_dim", self.attention_dim, 0)
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
    if self.bidirectional and self.hidden_dim % 2:
      raise ValueError(f"model.hidden_dim must be even with model.bidirectional "
                       f"(hidden_dim // 2 units a direction), got {self.hidden_dim}")

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def has_attention(self) -> bool:
    return self.attention != "none"

  @property
  def needs_joint_vocabulary(self) -> bool:
    return False

  @property
  def score(self) -> attn.Score | None:
    return attn.SCORES[self.attention] if self.has_attention else None

  @property
  def context_before_recurrence(self) -> bool:
    """The score queries the previous state and its context feeds layer 0 (Bahdanau)."""
    return self.has_attention and self.score.queries_previous_state

  @property
  def score_dim(self) -> int:
    return self.attention_dim or self.hidden_dim

  @property
  def encoder_unit(self) -> int:
    """Units of one encoder direction."""
    return self.hidden_dim // 2 if self.bidirectional else self.hidden_dim

  @property
  def summary(self) -> str:
    """A few words for report titles."""
    return f"{self.cell}, attention {self.attention}"
