"""The one interface through which training, decoding, evaluation and translate see a model.

A model family (`models/rnn/`, ...) provides a frozen config struct (its
hyperparameters and their checks, built from `config.model` and the two
vocabulary sizes) and a Flax module that takes it as its only attribute and
implements `Seq2SeqModel`. Callers build it with `models.build` and reach its
methods through `model.apply({"params": params}, ..., method=...)`; nothing
outside the family reads its parameters or its config fields.

Token arrays are int32, padded with `PAD_ID` at the end: `src [batch, src_len]`,
`tgt [batch, tgt_len]` (each sentence ending in `EOS_ID`); the decoder reads
`[SOS_ID] + tgt[:-1]`.
"""

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp


class ForwardOutput(NamedTuple):
  """What the full forward pass returns."""
  logits: jax.Array | None  # [batch, tgt_len, vocab] float32; None when not `project`
  features: jax.Array | None  # [batch, tgt_len, d] the output layer's input (tf_prob=None)
  attention: jax.Array | None  # [batch, tgt_len, src_len]; None without attention
  gold_fraction: jax.Array  # [] the fraction of steps after the first that read gold
  # [batch, layers, heads, tgt_len, src_len] cross-attention of every layer and
  # head, for a multi-head family (`attention` is then the last layer's mean)
  heads: jax.Array | None = None


def check_batch(src: jax.Array, tgt: jax.Array) -> None:
  """Shape and dtype errors that would otherwise surface deep inside a model."""
  for name, x in (("src", src), ("tgt", tgt)):
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
      raise ValueError(f"{name} must be int token ids [batch, length], got "
                       f"{x.dtype} {tuple(x.shape)}")
    if x.shape[1] == 0:
      raise ValueError(f"{name} has length 0: {tuple(x.shape)}")
  if src.shape[0] != tgt.shape[0]:
    raise ValueError(f"src and tgt batch sizes differ: src {tuple(src.shape)}, "
                     f"tgt {tuple(tgt.shape)}")


class Seq2SeqModel(Protocol):
  """An encoder-decoder, as training and decoding use it.

  Memory and decoder state are pytrees whose every leaf has the batch as its
  leading axis: beam search repeats both `beam_size` times and reorders the
  state's rows as hypotheses move.
  """

  config: Any  # the family's frozen config struct; its `needs_joint_vocabulary`
  # says whether source and target must share one vocabulary

  @property
  def has_attention(self) -> bool:
    """Whether `decode_step` returns attention weights worth plotting."""

  def __call__(self, src: jax.Array, tgt: jax.Array, tf_prob=None,
               rng: jax.Array | None = None, train: bool = False,
               per_step: bool = False, project: bool = True) -> ForwardOutput:
    """Scores `tgt` given `src`, feeding gold or the model's own tokens.

    Args:
      src: `[batch, src_len]`.
      tgt: `[batch, tgt_len]`.
      tf_prob: None for plain teacher forcing (the fast path), else the
        probability (a scalar, may be traced) that a step reads the gold
        previous token rather than the model's prediction, decided per token.
      rng: key for the teacher-forcing coins and sampled predictions.
      train: apply dropout (needs a 'dropout' rng).
      per_step: always take the per-token path, even where `tf_prob` is 1.
      project: with `tf_prob=None`, False leaves `logits` None and returns the
        output layer's inputs as `features`, for a loss fused with the
        projection (`output_projection`).
    """

  def encode(self, src: jax.Array, train: bool = False) -> Any:
    """The encoder's output for `src [batch, src_len]`."""

  def decoder_start(self, encoded: Any, max_len: int = 0) -> tuple[Any, Any]:
    """`(memory, state)`: what every decoder step reads, and the initial state
    for decoding at most `max_len` tokens (0: the family's own limit; a
    family with a key/value cache sizes it by this)."""

  def decode_step(self, memory: Any, state: Any,
                  tokens: jax.Array) -> tuple[Any, jax.Array, jax.Array | None]:
    """Feeds `tokens [batch]`: `(state, logits [batch, vocab] float32,
    attention weights [batch, src_len] or None)`."""

  def output_projection(self) -> tuple[jax.Array, jax.Array]:
    """`(w [d, vocab], b [vocab])` in the compute dtype: `logits = features @ w + b`."""
