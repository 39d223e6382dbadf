"""The training step: a pure `train_step(state, batch, rng) -> (state, metrics)`.

No IO, no config and no jit of the step here: the caller jits it (`training.loop`),
and may vmap it over stacked runs or jit it with shardings over a device mesh.
Only `init_state` is compiled here, once for every caller.
"""

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from seq2seq_jax.tokens import PAD_ID
from seq2seq_jax.training import losses

LOSS_NORMALIZATIONS = ("sentences", "tokens")


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # [] int32, updates done
  params: Any
  opt_state: Any


# Compiled: run op by op, init runs the whole forward pass (5 s of a 15 s quick run,
# again for each member of a stack); compiled, the forward pass is dead code. The
# RNNs' parameters are the same bits as op by op; the Transformer's embeddings
# (normal * d^-0.5, the product folded by XLA) may differ in the last bit.
@functools.partial(jax.jit, static_argnums=(0, 1))
def init_state(model, tx: optax.GradientTransformation, rng: jax.Array,
               batch: dict) -> TrainState:
  """Fresh parameters (shapes from `batch`'s `src` and `tgt`) and optimizer state."""
  params = model.init({"params": rng}, batch["src"], batch["tgt"])["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params))


def check_loss_normalization(normalization: str) -> None:
  if normalization not in LOSS_NORMALIZATIONS:
    raise ValueError(f"train.loss_normalization={normalization!r} is not valid; valid "
                     f"choices: {', '.join(LOSS_NORMALIZATIONS)}")


def loss_and_metrics(params, model, batch: dict, tf_prob, rng: jax.Array,
                     train: bool, label_smoothing: float = 0.0,
                     normalization: str = "sentences"):
  """The training objective of one batch, and its metrics.

  The objective is the summed token loss divided by the number of sentences
  (`normalization="sentences"`, the RNN recipe of tensorflow/nmt, OpenNMT-py and
  JoeyNMT) or of target tokens (`"tokens"`). The metrics' `loss` is always the
  mean token loss. Plain teacher forcing (`tf_prob=None`) leaves the output
  projection to `losses.projected_cross_entropy`, which fuses it with the loss.
  """
  check_loss_normalization(normalization)
  k_dropout, k_tf = jax.random.split(rng)
  fused = tf_prob is None
  variables = {"params": params}
  out = model.apply(variables, batch["src"], batch["tgt"], tf_prob=tf_prob,
                    rng=k_tf, train=train, rngs={"dropout": k_dropout}, project=not fused)
  tgt = batch["tgt"]
  if fused:
    proj_w, proj_b = model.apply(variables, method="output_projection")
    features = out.features
    token_loss, correct = losses.projected_cross_entropy(
        features.reshape(-1, features.shape[-1]), proj_w, proj_b, tgt.reshape(-1),
        label_smoothing)
    mask = (tgt.reshape(-1) != PAD_ID).astype(jnp.float32)
    ce = {"loss_sum": jnp.sum(token_loss * mask), "num_tokens": jnp.sum(mask),
          "num_correct": jnp.sum(correct * mask)}
  else:
    ce = losses.masked_cross_entropy(out.logits, tgt, label_smoothing)
  num = jnp.maximum(ce["num_tokens"], 1.0)
  metrics = {"loss": ce["loss_sum"] / num, "token_accuracy": ce["num_correct"] / num,
             "num_tokens": ce["num_tokens"], "tf_ratio": out.gold_fraction}
  if normalization == "tokens":
    return metrics["loss"], metrics
  # Bucket filler rows (all padding) are not sentences.
  sentences = jnp.sum(jnp.any(tgt != PAD_ID, axis=1).astype(jnp.float32))
  return ce["loss_sum"] / jnp.maximum(sentences, 1.0), metrics


def make_train_step(model, tx: optax.GradientTransformation,
                    teacher_forcing: Callable | None = None,
                    label_smoothing: float = 0.0,
                    loss_normalization: str = "sentences",
                    learning_rate: Callable | None = None):
  """Builds the pure `train_step(state, batch, rng) -> (state, metrics)`.

  Args:
    model: built by `models.build`.
    tx: the optimizer.
    teacher_forcing: `step -> probability` (see `schedules`), or None for
      plain teacher forcing, which needs no per-step sampling at all.
    label_smoothing: for the cross-entropy.
    loss_normalization: "sentences" or "tokens", see `loss_and_metrics`.
    learning_rate: the optimizer's schedule (`step -> rate`), reported as the
      metric `learning_rate`; None reports none.

  Returns:
    the step, not jitted; its metrics are loss, token_accuracy, num_tokens,
    tf_ratio (the fraction of gold inputs actually read), grad_norm,
    learning_rate (of this update), and tf_prob with a teacher-forcing
    schedule. The rng of a step is `fold_in(rng, state.step)`.
  """
  check_loss_normalization(loss_normalization)

  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    tf_prob = None if teacher_forcing is None else teacher_forcing(state.step)
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, model, batch, tf_prob, rng, True,
                                  label_smoothing, loss_normalization)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if learning_rate is not None:
      metrics["learning_rate"] = jnp.asarray(learning_rate(state.step), jnp.float32)
    if tf_prob is not None:
      metrics["tf_prob"] = tf_prob
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step
