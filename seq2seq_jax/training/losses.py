"""Token cross-entropy with a padding mask and optional label smoothing."""

import functools

import jax
import jax.numpy as jnp

from seq2seq_jax import ops
from seq2seq_jax.tokens import PAD_ID


def token_cross_entropy(logits: jax.Array, targets: jax.Array,
                        label_smoothing: float = 0.0) -> jax.Array:
  """Per-token loss `[...]` of `logits [..., vocab]` against `targets [...]`.

  With label smoothing `eps` the target distribution is
  `(1 - eps) * onehot + eps / vocab`.
  """
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  if _is_zero(label_smoothing):
    return nll
  smooth = -jnp.mean(log_probs, axis=-1)
  return (1.0 - label_smoothing) * nll + label_smoothing * smooth


def masked_cross_entropy(logits: jax.Array, targets: jax.Array,
                         label_smoothing: float = 0.0) -> dict:
  """Sums over the non-padding tokens of `targets [batch, tgt_len]`.

  Returns:
    dict with `loss_sum`, `num_tokens` and `num_correct` (argmax == target).
  """
  mask = (targets != PAD_ID).astype(jnp.float32)
  loss = token_cross_entropy(logits, targets, label_smoothing)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {"loss_sum": jnp.sum(loss * mask), "num_tokens": jnp.sum(mask),
          "num_correct": jnp.sum(correct * mask)}


def _is_zero(label_smoothing) -> bool:
  """Whether smoothing is off; a traced amount (a stacked member's) may be anything."""
  return isinstance(label_smoothing, (int, float)) and not label_smoothing


def _projected_ce_forward(h, w, b, targets, label_smoothing):
  logits = ops.widen(ops.matmul(h, w) + ops.widen(b))  # [N, V]
  lse = jax.nn.logsumexp(logits, axis=-1)
  gold = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
  loss = lse - gold
  if not _is_zero(label_smoothing):
    loss = (1.0 - label_smoothing) * loss + label_smoothing * (lse - jnp.mean(logits, -1))
  correct = (gold >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  return logits, lse, loss, correct


def projected_cross_entropy(h: jax.Array, w: jax.Array, b: jax.Array, targets: jax.Array,
                            label_smoothing=0.0):
  """The output projection and the token cross-entropy as one operation.

  Equal to `token_cross_entropy(h @ w + b, targets, label_smoothing)`, with a
  hand-written gradient: the forward pass keeps `softmax - q` (q the smoothed
  one-hot target) instead of the logits, so the backward pass is two matmuls
  and no further pass over the `[N, vocab]` logits.

  Args:
    h: `[N, hidden]` decoder outputs.
    w: `[hidden, vocab]` output projection.
    b: `[vocab]` its bias.
    targets: `[N]` int target ids.
    label_smoothing: as in `token_cross_entropy`: a number, or a traced
      scalar (a stacked member's own amount).

  Returns:
    `(loss [N], correct [N])`: per-token loss, and 1.0 where the target has the
    highest logit (no gradient).
  """
  if isinstance(label_smoothing, (int, float)):
    return _projected_ce(h, w, b, targets, float(label_smoothing))
  return _projected_ce_traced(h, w, b, targets, label_smoothing)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _projected_ce(h: jax.Array, w: jax.Array, b: jax.Array, targets: jax.Array,
                            label_smoothing: float = 0.0):
  _, _, loss, correct = _projected_ce_forward(h, w, b, targets, label_smoothing)
  return loss, correct


def _projected_ce_fwd(h, w, b, targets, label_smoothing):
  logits, lse, loss, correct = _projected_ce_forward(h, w, b, targets, label_smoothing)
  vocab = logits.shape[-1]
  d_logits = jnp.exp(logits - lse[:, None])
  rows = jnp.arange(targets.shape[0])
  d_logits = d_logits.at[rows, targets].add(-(1.0 - label_smoothing))
  if not _is_zero(label_smoothing):
    d_logits = d_logits - label_smoothing / vocab
  return (loss, correct), (h, w, b, targets, d_logits.astype(w.dtype))


def _projected_ce_bwd(label_smoothing, residuals, cotangents):
  del label_smoothing
  h, w, b, targets, d_logits = residuals
  d_loss, _ = cotangents
  # The per-token scale d_loss multiplies rows, so it goes on the small
  # [N, hidden] side of each matmul rather than over the [N, vocab] d_logits.
  d_loss = ops.widen(d_loss)
  d_h = (ops.matmul(d_logits, w.T) * d_loss[:, None]).astype(h.dtype)
  d_w = ops.matmul((ops.widen(h) * d_loss[:, None]).T, d_logits).astype(w.dtype)
  d_b = ops.matmul(d_loss, d_logits).astype(b.dtype)
  return d_h, d_w, d_b, None


_projected_ce.defvjp(_projected_ce_fwd, _projected_ce_bwd)


@jax.custom_vjp
def _projected_ce_traced(h, w, b, targets, label_smoothing):
  _, _, loss, correct = _projected_ce_forward(h, w, b, targets, label_smoothing)
  return loss, correct


def _projected_ce_traced_fwd(h, w, b, targets, label_smoothing):
  out, residuals = _projected_ce_fwd(h, w, b, targets, label_smoothing)
  return out, (residuals, label_smoothing)


def _projected_ce_traced_bwd(residuals, cotangents):
  residuals, label_smoothing = residuals
  d_h, d_w, d_b, _ = _projected_ce_bwd(None, residuals, cotangents)
  return d_h, d_w, d_b, None, jnp.zeros_like(label_smoothing)


_projected_ce_traced.defvjp(_projected_ce_traced_fwd, _projected_ce_traced_bwd)
