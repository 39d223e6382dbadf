"""The training step: a pure, jitted `train_step(state, batch, rng)`."""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from seq2seq_jax import losses, models, schedules
from seq2seq_jax.tokens import PAD_ID


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(learning_rate: float = 1e-3, clip_norm: float = 5.0,
                   optimizer: str = "adam") -> optax.GradientTransformation:
  """Global-norm gradient clipping, then Adam or SGD."""
  optimizers = {"adam": optax.adam, "sgd": optax.sgd}
  if optimizer not in optimizers:
    raise ValueError(f"unknown train.optimizer {optimizer!r}; valid optimizers: "
                     f"{', '.join(optimizers)}")
  chain = [optimizers[optimizer](learning_rate)]
  if clip_norm:
    chain.insert(0, optax.clip_by_global_norm(clip_norm))
  return optax.chain(*chain)


def init_state(model, tx, rng: jax.Array, batch: dict) -> TrainState:
  params = model.init({"params": rng}, batch["src"], batch["tgt"])["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params))


def loss_and_metrics(params, model, batch: dict, tf_prob, rng: jax.Array,
                     train: bool, label_smoothing: float = 0.0):
  """Mean token loss and the metrics of one batch.

  Plain teacher forcing (`tf_prob=None`) leaves the output projection to
  `losses.projected_cross_entropy`, which fuses it with the loss.
  """
  k_dropout, k_tf = jax.random.split(rng)
  fused = tf_prob is None
  out = model.apply({"params": params}, batch["src"], batch["tgt"], tf_prob=tf_prob,
                    rng=k_tf, train=train, rngs={"dropout": k_dropout}, project=not fused)
  tgt = batch["tgt"]
  if fused:
    dtype = models.DTYPES[model.dtype]
    features = out["features"]
    token_loss, correct = losses.projected_cross_entropy(
        features.reshape(-1, features.shape[-1]), params["decoder"]["out_w"].astype(dtype),
        params["decoder"]["out_b"].astype(dtype),
        tgt.reshape(-1), label_smoothing)
    mask = (tgt.reshape(-1) != PAD_ID).astype(jnp.float32)
    ce = {"loss_sum": jnp.sum(token_loss * mask), "num_tokens": jnp.sum(mask),
          "num_correct": jnp.sum(correct * mask)}
  else:
    ce = losses.masked_cross_entropy(out["logits"], tgt, label_smoothing)
  num = jnp.maximum(ce["num_tokens"], 1.0)
  loss = ce["loss_sum"] / num
  metrics = {"loss": loss, "token_accuracy": ce["num_correct"] / num,
             "num_tokens": ce["num_tokens"], "tf_ratio": out["gold_fraction"]}
  return loss, metrics


def make_train_step(model, tx: optax.GradientTransformation,
                    teacher_forcing: Callable | None = None,
                    label_smoothing: float = 0.0, jit: bool = True):
  """Builds `train_step(state, batch, rng) -> (state, metrics)`.

  Args:
    model: a `Seq2Seq`.
    tx: the optimizer.
    teacher_forcing: `step -> probability` (see `schedules`), or None for
      plain teacher forcing, which needs no per-step sampling at all.
    label_smoothing: for the cross-entropy.
    jit: compile it, donating the state.
  """
  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    tf_prob = None if teacher_forcing is None else teacher_forcing(state.step)
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, model, batch, tf_prob, rng, True,
                                  label_smoothing)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if tf_prob is not None:
      metrics["tf_prob"] = tf_prob
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jax.jit(train_step, donate_argnums=(0,)) if jit else train_step


def teacher_forcing_from_config(tf_config) -> Callable | None:
  """The schedule of a `train.teacher_forcing` config section (None: always 1)."""
  params = dict(tf_config)
  name = params.pop("schedule")
  if schedules.is_always_teacher_forced(name, **params):
    return None
  return schedules.make_schedule(name, **params)
