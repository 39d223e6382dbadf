"""Teacher-forcing schedules: the probability of feeding the gold token.

Each schedule is a pure function of the training step `i` (a Python number or
a traced scalar), so it runs inside the jitted train step. Bengio et al.
(2015), "Scheduled Sampling for Sequence Prediction with Recurrent Neural
Networks", section 2.4, defines the decays:

* ``linear``:          ``max(eps_min, k - c * i)``
* ``exponential``:     ``k ** i``               (``k < 1``)
* ``inverse_sigmoid``: ``k / (k + exp(i / k))`` (``k >= 1``)

plus ``constant`` (a fixed ratio; 1.0 is plain teacher forcing, 0.0 always
feeds the model's own prediction) and ``step`` (teacher forcing for the first
``steps`` steps, free-running after).
"""

import inspect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import config_schema

Schedule = Callable[[Any], Any]


def constant_schedule(i, ratio=1.0):
  return jnp.full(jnp.shape(i), ratio, jnp.float32)


def linear_schedule(i, k=1.0, c=1e-4, eps_min=0.0):
  return jnp.maximum(eps_min, k - c * jnp.asarray(i, jnp.float32))


def exponential_schedule(i, k=0.9999):
  # exp(i log k) with log k taken in float64: float32(k) ** i drifts by i ulps.
  return jnp.exp(jnp.asarray(i, jnp.float32) * math.log(k))


def inverse_sigmoid_schedule(i, k=1000.0):
  return k / (k + jnp.exp(jnp.asarray(i, jnp.float32) / k))


def step_schedule(i, steps=1000):
  return jnp.where(jnp.asarray(i) < steps, 1.0, 0.0).astype(jnp.float32)


SCHEDULES: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "constant": (constant_schedule, ("ratio",)),
    "linear": (linear_schedule, ("k", "c", "eps_min")),
    "exponential": (exponential_schedule, ("k",)),
    "inverse_sigmoid": (inverse_sigmoid_schedule, ("k",)),
    "step": (step_schedule, ("steps",)),
}


def _check_params(name: str, p: dict) -> None:
  """Rejects parameter values for which the formula leaves [0, 1]."""
  def need(field, ok, what):
    if field in p and not ok(p[field]):
      raise ValueError(f"teacher_forcing.{field}={p[field]!r} for schedule "
                       f"{name!r}: must be {what}")
  if name == "constant":
    need("ratio", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  elif name == "linear":
    need("k", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
    need("eps_min", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
    need("c", lambda v: v >= 0.0, ">= 0")
  elif name == "exponential":
    need("k", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
  elif name == "inverse_sigmoid":
    need("k", lambda v: v >= 1.0, ">= 1")
  elif name == "step":
    need("steps", lambda v: v >= 0, ">= 0")


def make_schedule(name: str, **params) -> Schedule:
  """Returns `step -> teacher-forcing probability` for schedule `name`.

  Args:
    name: one of `SCHEDULES`.
    **params: the schedule's parameters; others are ignored, so a config
      section holding the parameters of several schedules can be passed as is.
  """
  if name not in SCHEDULES:
    raise ValueError(f"unknown teacher_forcing.schedule {name!r}; valid "
                     f"schedules: {', '.join(SCHEDULES)}")
  fn, fields = SCHEDULES[name]
  kwargs = {f: params[f] for f in fields if f in params and params[f] is not None}
  _check_params(name, kwargs)
  return lambda i: fn(i, **kwargs)


def is_always_teacher_forced(name: str, **params) -> bool:
  """True when the schedule is 1 at every step, so no step needs sampling."""
  return name == "constant" and float(params.get("ratio", 1.0)) == 1.0


def teacher_forcing_from_config(tf_config) -> Schedule | None:
  """The schedule of a `train.teacher_forcing` config section (None: always 1)."""
  params = config_schema.as_dict(tf_config)
  name = params.pop("schedule")
  if is_always_teacher_forced(name, **params):
    return None
  return make_schedule(name, **params)


# ----- one traced function for all schedules (stacked sweep members) -----

def member_parameters(tf_config) -> dict[str, np.ndarray]:
  """A `train.teacher_forcing` section as numbers for `traced_schedule`.

  The schedule's index in `SCHEDULES` and every parameter a schedule reads,
  with each schedule's own defaults, so members with different schedules can
  share one compiled step. Exponential's `log k` is taken in float64 here, as
  `exponential_schedule` does.
  """
  params = config_schema.as_dict(tf_config)
  name = params.pop("schedule")
  make_schedule(name, **params)  # checks the name and the values
  fn, fields = SCHEDULES[name]
  defaults = {f: p.default for f, p in inspect.signature(fn).parameters.items() if f in fields}
  values = {**defaults, **{f: params[f] for f in fields if params.get(f) is not None}}
  out = {"schedule": np.int32(list(SCHEDULES).index(name)),
         "ratio": np.float32(values.get("ratio", 1.0)), "k": np.float32(values.get("k", 1.0)),
         "c": np.float32(values.get("c", 0.0)), "eps_min": np.float32(values.get("eps_min", 0.0)),
         "steps": np.int32(values.get("steps", 0)),
         "log_k": np.float32(math.log(values["k"]) if name == "exponential" else 0.0)}
  return out


def traced_schedule(i, p: dict):
  """The schedule `p["schedule"]` (an index, may be traced) at step `i`, with the
  parameters of `member_parameters`: the same values as `make_schedule`'s."""
  branches = [
      lambda: constant_schedule(i, p["ratio"]),
      lambda: linear_schedule(i, p["k"], p["c"], p["eps_min"]),
      lambda: jnp.exp(jnp.asarray(i, jnp.float32) * p["log_k"]),
      lambda: inverse_sigmoid_schedule(i, p["k"]),
      lambda: step_schedule(i, p["steps"]),
  ]
  assert len(branches) == len(SCHEDULES)
  return jax.lax.switch(p["schedule"], branches).astype(jnp.float32)
