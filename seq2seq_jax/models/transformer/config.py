"""The Transformer family's hyperparameters: one frozen struct that every layer reads."""

import dataclasses

import jax.numpy as jnp

from seq2seq_jax.models.checks import check_choice, check_int

NORMS = ("post", "pre")  # post: the paper's LayerNorm(x + sublayer(x)); pre: x + sublayer(LN(x))
POSITIONS = ("sinusoidal", "learned")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}
PREDICTIONS = ("argmax", "sample")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """`config.model` of the `transformer` family (Vaswani et al. 2017), checked on construction.

  Field names are the config's (`--config.model.d_model=512`); the vocabulary
  sizes come from the data. The defaults are the `small` preset of
  `configs/deen_transformer.py`; its `base` is the paper's base model.
  """
  src_vocab_size: int
  tgt_vocab_size: int
  d_model: int = 256
  num_heads: int = 4
  ff_dim: int = 1024  # position-wise feed-forward: max(0, x W1 + b1) W2 + b2
  encoder_layers: int = 3
  decoder_layers: int = 3
  dropout: float = 0.1  # on embeddings + positions and on every sublayer's output
  attention_dropout: float = 0.0  # on the attention weights
  norm: str = "post"  # post (the paper) | pre (norm_first, with a final LayerNorm)
  positions: str = "sinusoidal"  # sinusoidal | learned
  max_len: int = 512  # learned positions: the longest input and output (longer is an error)
  share_embeddings: bool = False  # one embedding for source and target (equal vocabularies)
  tie_output: bool = False  # the output projection is the target embedding, transposed
  dtype: str = "float32"  # of the matmuls; layer norms, softmax and logits stay float32
  predictions: str = "argmax"  # argmax | sample: what scheduled sampling feeds back

  def __post_init__(self):
    for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "num_heads", "ff_dim",
                 "encoder_layers", "decoder_layers", "max_len"):
      check_int(name, getattr(self, name), 1)
    check_choice("norm", self.norm, NORMS)
    check_choice("positions", self.positions, POSITIONS)
    check_choice("dtype", self.dtype, tuple(DTYPES))
    check_choice("predictions", self.predictions, PREDICTIONS)
    for name in ("dropout", "attention_dropout"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) \
          or not 0.0 <= value < 1.0:
        raise ValueError(f"model.{name} must be in [0, 1), got {value!r}")
    if self.d_model % self.num_heads:
      raise ValueError(f"model.d_model={self.d_model} must be a multiple of "
                       f"model.num_heads={self.num_heads}")
    if self.positions == "sinusoidal" and self.d_model % 2:
      raise ValueError(f"model.d_model must be even for sinusoidal positions, got "
                       f"{self.d_model}")
    if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
      raise ValueError(f"model.share_embeddings needs one vocabulary for both sides; the "
                       f"source has {self.src_vocab_size} tokens, the target "
                       f"{self.tgt_vocab_size}")

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def has_attention(self) -> bool:
    return True

  @property
  def needs_joint_vocabulary(self) -> bool:
    """One embedding for both sides needs `dataset.joint_vocab` (equal sizes are not enough)."""
    return self.share_embeddings

  @property
  def summary(self) -> str:
    """A few words for report titles."""
    return (f"transformer d{self.d_model} h{self.num_heads} "
            f"{self.encoder_layers}+{self.decoder_layers} layers, {self.norm}-norm")
