"""The optimizer: global-norm gradient clipping, then Adam, AdamW, Adafactor or SGD,
with a learning-rate schedule (optax).

AdamW (Loshchilov & Hutter 2019, `optax.adamw`) decays the weights apart from the
gradient: each update adds ``lr * weight_decay * param``, as PyTorch's AdamW (JoeyNMT's
default) does; Adafactor (Shazeer & Stern 2018, `optax.adafactor` with its defaults:
factored second moments, updates clipped at 1, the rate relative to each matrix's
scale) adds ``weight_decay * param``, not scaled by the rate (optax's order). Only
matrices decay (kernels, embeddings): not biases nor LayerNorm's scales and offsets
(every parameter of one dimension).

Schedules of the step `i` (updates done, from 0), `lr = train.learning_rate`:

* ``constant``: ``lr``
* ``rsqrt`` (Vaswani 2017): linear warmup, then the inverse square root,
  ``lr * min((i+1) / w, sqrt(w / (i+1)))`` with ``w = warmup_steps``: the paper's
  ``d^-0.5 * min(s^-0.5, s * w^-1.5)`` at ``s = i+1`` when ``lr = (d * w)^-0.5``, so
  ``lr`` is the peak, reached at step ``w``
* ``cosine``: linear warmup from 0 over ``warmup_steps``, then cosine decay to 0
  at ``train.num_steps`` (`optax.warmup_cosine_decay_schedule`)
* ``halving`` (Luong 2015): ``lr * 0.5 ** floor(max(0, i - K) / N)``, K =
  ``lr_halve_after``, N = ``lr_halve_every``: halved at K + N, K + 2N, ...
  (`optax.exponential_decay`, staircase)
* ``plateau``: ``lr * plateau_factor ** reductions``, a reduction each time the dev
  metric has not improved for ``plateau_patience`` evaluations
  (`early_stopping.Plateau`; the step reads the rate as a number)
"""

import math

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "sgd", "adamw", "adafactor")
DECAYING = ("adamw", "adafactor")
LR_SCHEDULES = ("constant", "rsqrt", "cosine", "halving", "plateau")


def inverse_sqrt_schedule(peak: float, warmup_steps: int) -> optax.Schedule:
  """`peak * min((i+1) / w, sqrt(w / (i+1)))`: Vaswani et al.'s schedule, peak at step w."""
  def schedule(count):
    s = jnp.asarray(count, jnp.float32) + 1.0
    return peak * jnp.minimum(s / warmup_steps, jnp.sqrt(warmup_steps / s))
  return schedule


def _check_number(field, value, ok, what):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
      or not ok(value):
    raise ValueError(f"train.{field} must be {what}, got {value!r}")


def _check_int(field, value, low):
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"train.{field} must be an int >= {low}, got {value!r}")


def _check_optimizer(name) -> None:
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown train.optimizer {name!r}; valid optimizers: "
                     f"{', '.join(OPTIMIZERS)}")


def check(train_config) -> None:
  """Raises ValueError naming the first bad optimizer or schedule field of `config.train`."""
  _check_optimizer(train_config.optimizer)
  _check_number("learning_rate", train_config.learning_rate, lambda v: v > 0, "a number > 0")
  _check_number("clip_norm", train_config.clip_norm, lambda v: v >= 0, "a number >= 0 (0: off)")
  name = train_config.lr_schedule
  if name not in LR_SCHEDULES:
    raise ValueError(f"train.lr_schedule={name!r} is not valid; valid schedules: "
                     f"{', '.join(LR_SCHEDULES)}")
  _check_int("warmup_steps", train_config.warmup_steps, 1 if name == "rsqrt" else 0)
  _check_int("lr_halve_after", train_config.lr_halve_after, 0)
  _check_int("lr_halve_every", train_config.lr_halve_every, 1)
  _check_int("plateau_patience", train_config.plateau_patience, 1)
  _check_number("plateau_factor", train_config.plateau_factor, lambda v: 0 < v < 1,
                "in (0, 1)")
  for field in ("adam_b1", "adam_b2"):
    _check_number(field, getattr(train_config, field), lambda v: 0 <= v < 1, "in [0, 1)")
  _check_number("adam_eps", train_config.adam_eps, lambda v: v > 0, "a number > 0")
  _check_number("weight_decay", train_config.weight_decay, lambda v: v >= 0, "a number >= 0")
  _check_number("ema_decay", train_config.ema_decay, lambda v: 0 <= v < 1,
                "in [0, 1) (0: off)")
  if train_config.weight_decay and train_config.optimizer not in DECAYING:
    raise ValueError(f"train.weight_decay={train_config.weight_decay} needs "
                     f"train.optimizer={' or '.join(DECAYING)} (decoupled weight decay; "
                     f"{train_config.optimizer} has none)")


def learning_rate_schedule(train_config, peak=None, warmup=None) -> optax.Schedule:
  """`step -> learning rate` of a `config.train` section (see the module docstring).

  `peak` and `warmup` (rsqrt's warmup only) replace `train.learning_rate` and
  `train.warmup_steps`, and may be traced: a stacked step gives each member its own.
  """
  name = train_config.lr_schedule
  lr = train_config.learning_rate if peak is None else peak
  if warmup is None or name != "rsqrt":
    warmup = train_config.warmup_steps
  if name == "rsqrt":
    return inverse_sqrt_schedule(lr, warmup)
  if name == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup,
        decay_steps=max(train_config.num_steps, warmup + 1), end_value=0.0)
  if name == "halving":
    return optax.exponential_decay(lr, transition_steps=train_config.lr_halve_every,
                                   decay_rate=0.5,
                                   transition_begin=train_config.lr_halve_after,
                                   staircase=True)
  return optax.constant_schedule(lr)  # constant; plateau: brought down between steps


def decay_mask(params):
  """Which parameters weight decay shrinks: the matrices, not biases or norms' scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(learning_rate=1e-3, clip_norm: float = 5.0, optimizer: str = "adam",
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   clip: bool | None = None, weight_decay: float = 0.0
                   ) -> optax.GradientTransformation:
  """Global-norm gradient clipping (off when `clip_norm` is 0), then Adam, AdamW,
  Adafactor or SGD (`weight_decay`: AdamW's and Adafactor's, see the module docstring).

  `learning_rate` is a number or an optax schedule of the step. A traced
  `clip_norm` needs `clip` to say whether clipping is on (it changes the
  state's layout, so it cannot depend on a traced value).
  """
  _check_optimizer(optimizer)
  if optimizer == "adam":
    chain = [optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)]
  elif optimizer == "adamw":
    chain = [optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                         mask=decay_mask)]
  elif optimizer == "adafactor":
    chain = [optax.adafactor(learning_rate, weight_decay_rate=weight_decay or None,
                             weight_decay_mask=decay_mask)]
  else:
    chain = [optax.sgd(learning_rate)]
  if bool(clip_norm) if clip is None else clip:
    chain.insert(0, optax.clip_by_global_norm(clip_norm))
  return optax.chain(*chain)


def optimizer_from_config(train_config, peak=None, warmup=None, clip_norm=None
                          ) -> optax.GradientTransformation:
  """The optimizer of a `config.train` section, checked.

  A constant rate is passed as a number, so the optimizer state has no step
  counter of its own and checkpoints keep the layout they had before schedules.
  `peak`, `warmup` and `clip_norm` replace the config's learning rate, rsqrt
  warmup and clip norm with (traced) values of a stacked member; whether
  clipping is on at all stays the config's choice, as it changes the state's layout.
  """
  check(train_config)
  constant = train_config.lr_schedule in ("constant", "plateau")
  peak_value = train_config.learning_rate if peak is None else peak
  return make_optimizer(peak_value if constant
                        else learning_rate_schedule(train_config, peak, warmup),
                        train_config.clip_norm if clip_norm is None else clip_norm,
                        train_config.optimizer, train_config.adam_b1,
                        train_config.adam_b2, train_config.adam_eps,
                        clip=bool(train_config.clip_norm),
                        weight_decay=train_config.weight_decay)
