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


class ForwardOutput(NamedTuple):
  """What the full forward pass returns."""
  logits: jax.Array | None  # [batch, tgt_len, vocab] float32; None when not `project`
  features: jax.Array | None  # [batch, tgt_len, d] the output layer's input (tf_prob=None)
  attention: jax.Array | None  # [batch, tgt_len, src_len]; None without attention
  gold_fraction: jax.Array  # [] the fraction of steps after the first that read gold


class Seq2SeqModel(Protocol):
  """An encoder-decoder, as training and decoding use it.

  Memory and decoder state are pytrees whose every leaf has the batch as its
  leading axis: beam search repeats both `beam_size` times and reorders the
  state's rows as hypotheses move.
  """

  config: Any  # the family's frozen config struct

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

  def decoder_start(self, encoded: Any) -> tuple[Any, Any]:
    """`(memory, state)`: what every decoder step reads, and the initial state."""

  def decode_step(self, memory: Any, state: Any,
                  tokens: jax.Array) -> tuple[Any, jax.Array, jax.Array | None]:
    """Feeds `tokens [batch]`: `(state, logits [batch, vocab] float32,
    attention weights [batch, src_len] or None)`."""

  def output_projection(self) -> tuple[jax.Array, jax.Array]:
    """`(w [d, vocab], b [vocab])` in the compute dtype: `logits = features @ w + b`."""
