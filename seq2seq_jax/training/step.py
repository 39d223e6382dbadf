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
  ema = None  # `AveragedTrainState`'s field; not one of this class (its checkpoints' layout)

  @property
  def served(self):
    """The weights a run evaluates and translate serves: the average when there is one."""
    return self.params if self.ema is None else self.ema

  def with_served(self, params) -> "TrainState":
    """The state with `params` as what it serves (an average kept alike)."""
    return self.replace(params=params)


class AveragedTrainState(TrainState):
  """With train.ema_decay: also the exponential moving average of `params` (a class of
  its own: a `None` field would be a node of the checkpoint's tree, and the
  checkpoints of runs without it could no longer be read)."""
  ema: Any = None

  def with_served(self, params) -> "AveragedTrainState":
    return self.replace(params=params, ema=params)


# Compiled: run op by op, init runs the whole forward pass (5 s of a 15 s quick run,
# again for each member of a stack); compiled, the forward pass is dead code. The
# RNNs' parameters are the same bits as op by op; the Transformer's embeddings
# (normal * d^-0.5, the product folded by XLA) may differ in the last bit.
@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def init_state(model, tx: optax.GradientTransformation, rng: jax.Array,
               batch: dict, ema: bool = False) -> TrainState:
  """Fresh parameters (shapes from `batch`'s `src` and `tgt`) and optimizer state;
  with `ema`, their moving average, starting at them."""
  params = model.init({"params": rng}, batch["src"], batch["tgt"])["params"]
  fields = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return AveragedTrainState(**fields, ema=params) if ema else TrainState(**fields)


def moving_average(ema, params, decay):
  """`decay * ema + (1 - decay) * params`, leaf by leaf (Polyak averaging as Marian's
  `--exponential-smoothing` and OpenNMT-tf do it, without a warmup of the decay)."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def check_loss_normalization(normalization: str) -> None:
  if normalization not in LOSS_NORMALIZATIONS:
    raise ValueError(f"train.loss_normalization={normalization!r} is not valid; valid "
                     f"choices: {', '.join(LOSS_NORMALIZATIONS)}")


def _sums(params, model, batch: dict, tf_prob, rng: jax.Array, train: bool,
          label_smoothing: float = 0.0):
  """The summed token loss of one batch and its counts (`losses.masked_cross_entropy`'s
  dict), and the fraction of gold inputs the decoder read."""
  k_dropout, k_tf = jax.random.split(rng)
  fused = tf_prob is None
  variables = {"params": params}
  out = model.apply(variables, batch["src"], batch["tgt"], tf_prob=tf_prob,
                    rng=k_tf, train=train, rngs={"dropout": k_dropout}, project=not fused)
  tgt = batch["tgt"]
  if not fused:
    return losses.masked_cross_entropy(out.logits, tgt, label_smoothing), out.gold_fraction
  proj_w, proj_b = model.apply(variables, method="output_projection")
  features = out.features
  token_loss, correct = losses.projected_cross_entropy(
      features.reshape(-1, features.shape[-1]), proj_w, proj_b, tgt.reshape(-1),
      label_smoothing)
  mask = (tgt.reshape(-1) != PAD_ID).astype(jnp.float32)
  return {"loss_sum": jnp.sum(token_loss * mask), "num_tokens": jnp.sum(mask),
          "num_correct": jnp.sum(correct * mask)}, out.gold_fraction


def _sentences(tgt: jax.Array) -> jax.Array:
  """Bucket filler rows (all padding) are not sentences."""
  return jnp.sum(jnp.any(tgt != PAD_ID, axis=1).astype(jnp.float32))


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
  ce, gold_fraction = _sums(params, model, batch, tf_prob, rng, train, label_smoothing)
  num = jnp.maximum(ce["num_tokens"], 1.0)
  metrics = {"loss": ce["loss_sum"] / num, "token_accuracy": ce["num_correct"] / num,
             "num_tokens": ce["num_tokens"], "tf_ratio": gold_fraction}
  if normalization == "tokens":
    return metrics["loss"], metrics
  return ce["loss_sum"] / jnp.maximum(_sentences(batch["tgt"]), 1.0), metrics


def accumulated_grads(params, model, micro: dict, tf_prob, rng: jax.Array,
                      label_smoothing: float = 0.0, normalization: str = "sentences"):
  """The gradient of one update made of micro-batches (`micro`'s sides `[K, batch,
  len]`), and its metrics: each micro-batch's summed loss is differentiated in turn
  (one micro-batch's activations in memory), the gradients summed and divided by the
  whole update's count of sentences or tokens, so that the update is the one batch
  of K times the rows would make, to float rounding. Micro-batch k draws its dropout
  and teacher-forcing coins from `fold_in(rng, k)`, with the update's `tf_prob`."""
  check_loss_normalization(normalization)

  def summed(p, batch, key):
    ce, gold_fraction = _sums(p, model, batch, tf_prob, key, True, label_smoothing)
    return ce["loss_sum"], {**ce, "sentences": _sentences(batch["tgt"]),
                            "gold_tokens": gold_fraction * ce["num_tokens"]}

  grad_fn = jax.value_and_grad(summed, has_aux=True)

  def add_micro_batch(carry, xs):
    grads, totals = carry
    batch, k = xs
    (_, counts), g = grad_fn(params, batch, jax.random.fold_in(rng, k))
    return (jax.tree.map(jnp.add, grads, g),
            {name: totals[name] + counts[name] for name in totals}), None

  totals = dict.fromkeys(("loss_sum", "num_tokens", "num_correct", "sentences", "gold_tokens"),
                         jnp.zeros((), jnp.float32))
  steps = micro["tgt"].shape[0]
  (grads, totals), _ = jax.lax.scan(add_micro_batch,
                                    (jax.tree.map(jnp.zeros_like, params), totals),
                                    (micro, jnp.arange(steps)))
  count = totals["num_tokens" if normalization == "tokens" else "sentences"]
  grads = jax.tree.map(lambda g: g / jnp.maximum(count, 1.0), grads)
  num = jnp.maximum(totals["num_tokens"], 1.0)
  return grads, {"loss": totals["loss_sum"] / num, "token_accuracy": totals["num_correct"] / num,
                 "num_tokens": totals["num_tokens"], "tf_ratio": totals["gold_tokens"] / num}


def make_train_step(model, tx: optax.GradientTransformation,
                    teacher_forcing: Callable | None = None,
                    label_smoothing: float = 0.0,
                    loss_normalization: str = "sentences",
                    learning_rate: Callable | None = None,
                    accumulate: bool = False, ema_decay: float = 0.0):
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
    accumulate: the batch's sides are `[K, batch, len]`, K micro-batches of one
      update (`accumulated_grads`, `train.grad_accum_steps`).
    ema_decay: with a state that has `ema`, its decay (`moving_average`).

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
    if accumulate:
      grads, metrics = accumulated_grads(state.params, model, batch, tf_prob, rng,
                                         label_smoothing, loss_normalization)
    else:
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
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    if state.ema is not None:
      state = state.replace(ema=moving_average(state.ema, params, ema_decay))
    return state, metrics

  return train_step
