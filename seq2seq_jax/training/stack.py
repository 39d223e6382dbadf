"""Stacked sweep members: K runs of one model shape trained as one program.

Every leaf of the train state, the rng and the member's hyperparameters gets
a leading member axis, and `make_stacked_train_step` maps the solo step over it:
`jax.vmap` on an accelerator, `jax.lax.map` (one member after the other, in
the same program) on a CPU. What a member may choose on its own (`TRACED_FIELDS`) enters the
step as numbers; every other field changes an array shape or a code path, and
members that differ in one train in separate stacks (`stack_key`).

A solo run is a stack of one (`training.loop`): with one member the stacked
step is the solo step, its hyperparameters compiled in as constants, and
computes what the solo step computes, bit for bit.

No IO and no jit here, as in `step`: `training.loop` jits it.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import config_schema, parallel
from seq2seq_jax.tokens import PAD_ID
from seq2seq_jax.training import optim, schedules, step

# The fields a member of a stack may set to its own value. Everything else
# must be equal across a stack: it changes shapes, code paths or the data.
TRACED_FIELDS = ("seed", "train.learning_rate", "train.clip_norm", "train.label_smoothing",
                 "train.teacher_forcing")
RSQRT_TRACED = ("train.warmup_steps",)  # with lr_schedule=rsqrt only (optax's checks it elsewhere)


def _drop(tree: dict, dotted: str) -> None:
  node, parts = tree, dotted.split(".")
  for part in parts[:-1]:
    node = node.get(part, {})
  node.pop(parts[-1], None)


def stack_key(config) -> str:
  """The config without the fields a stacked member may choose: members with equal
  keys can share one compiled step. Whether clipping is on stays in the key (it
  changes the optimizer state's layout), its norm does not. A member taught with
  gold tokens throughout may join members with sampling schedules: the stack then
  takes the per-token path for all (`make_stacked_train_step`)."""
  tree = json.loads(json.dumps(config_schema.as_dict(config)))
  clip_on = bool(tree["train"]["clip_norm"])
  rsqrt = config.train.lr_schedule == "rsqrt"
  traced = TRACED_FIELDS + (RSQRT_TRACED if rsqrt else ())
  for field in traced:
    _drop(tree, field)
  tree["train"]["clip_on"] = clip_on
  return json.dumps(tree, sort_keys=True)


def check_stackable(configs) -> None:
  """Raises ValueError when the configs cannot share one compiled step."""
  keys = [json.loads(stack_key(c)) for c in configs]
  other = next((k for k in keys if k != keys[0]), None)
  if other is not None:
    raise ValueError("members of one stack may differ only in " + ", ".join(TRACED_FIELDS) +
                     "; these differ elsewhere: " + _first_difference(keys[0], other))


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
  for key in sorted(set(a) | set(b)):
    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
      found = _first_difference(a[key], b[key], f"{prefix}{key}.")
      if found:
        return found
    elif a.get(key) != b.get(key):
      return f"{prefix}{key} ({a.get(key)!r} vs {b.get(key)!r})"
  return ""


def stacked_batch(batches: list, position: int, micro_batches: int = 1) -> dict:
  """Every member's batch at `position`, padded to the widest and stacked: `[K, batch, len]`,
  or with `micro_batches` M `[K, M, batch / M, len]` (micro-batch m: rows m * batch / M on).

  With length buckets members can be in different buckets at one step; the extra
  columns are padding, which the models mask (dropout masks over the source then
  differ from a solo run's, as they are drawn for the padded shape). Token batches
  of different buckets have different rows: the extra rows (at the end of each
  micro-batch) are all padding, which carries no loss.
  """
  out = {}
  parts = [b(position) for b in batches]
  for side in ("src", "tgt"):
    micro = [p[side].reshape(micro_batches, -1, p[side].shape[-1]) for p in parts]
    rows, width = max(m.shape[1] for m in micro), max(m.shape[2] for m in micro)
    out[side] = np.stack([np.pad(m, ((0, 0), (0, rows - m.shape[1]), (0, width - m.shape[2])),
                                 constant_values=PAD_ID) for m in micro])
    if micro_batches == 1:
      out[side] = out[side][:, 0]
  return out


def needs_sampling(config) -> bool:
  """Whether the member's teacher-forcing schedule ever feeds a prediction."""
  return schedules.teacher_forcing_from_config(config.train.teacher_forcing) is not None


def member_hyper(config, lr_scale: float = 1.0) -> dict:
  """The traced hyperparameters of one member, as numpy scalars; the rate times
  `lr_scale` (`train.lr_schedule=plateau`'s reductions)."""
  tc = config.train
  return {"learning_rate": np.float32(tc.learning_rate * lr_scale),
          "warmup_steps": np.float32(tc.warmup_steps),
          "clip_norm": np.float32(tc.clip_norm),
          "label_smoothing": np.float32(tc.label_smoothing),
          "teacher_forcing": schedules.member_parameters(tc.teacher_forcing)}


def stack_trees(trees: list):
  """One tree whose leaves are the members' leaves stacked on a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def member_tree(tree, index: int):
  """Member `index`'s slice of a stacked tree."""
  return jax.tree.map(lambda x: x[index], tree)


def make_stacked_train_step(model, train_config, sampling: bool,
                            vmap_width: int | None = None, members: int | None = None):
  """Builds `step(states, batches, rngs, hypers, alive) -> (states, metrics)`.

  Args:
    model: built by `models.build`; all members share it.
    train_config: the stack's `config.train` (its non-traced fields are every
      member's).
    sampling: whether any member's schedule feeds predictions; then every member
      runs the per-token path (a member at probability 1 reads gold throughout).
    vmap_width: see `parallel.map_members`; `parallel.default_vmap_width()` suits
      the backend.
    members: how many members the stack has. A stack of one (a solo run) runs
      the solo step on its member, with `train_config`'s hyperparameters
      compiled in (`hypers` is not read): the numbers of a solo run.

  Returns:
    the stacked step, not jitted. Every argument and output has a leading member
    axis: `states` (`step.TrainState`), `batches` (`src`, `tgt`), `rngs` (each
    member's `PRNGKey(seed)`), `hypers` (`member_hyper`), `alive` (bool). A member
    whose loss or gradient is not finite, or that is not alive, keeps its state
    (its update is masked out) and comes back with `alive` False; the metrics
    are the solo step's plus `alive`.
  """
  normalization = train_config.loss_normalization

  def masked(train_step, state, batch, rng, alive):
    new_state, metrics = train_step(state, batch, rng)
    ok = alive & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    metrics["alive"] = ok
    return new_state, metrics

  if members == 1 and train_config.lr_schedule != "plateau":  # plateau: a traced rate
    tc = train_config
    solo_step = step.make_train_step(
        model, optim.optimizer_from_config(tc),
        schedules.teacher_forcing_from_config(tc.teacher_forcing), tc.label_smoothing,
        normalization, learning_rate=optim.learning_rate_schedule(tc),
        accumulate=tc.grad_accum_steps > 1, ema_decay=tc.ema_decay)

    def stack_of_one(states, batches, rngs, hypers, alive):
      one = jax.tree.map(lambda x: x[0], (states, batches, rngs, alive))
      return jax.tree.map(lambda x: x[None], masked(solo_step, *one))
    return stack_of_one

  def member_step(state, batch, rng, hyper, alive):
    tx = optim.optimizer_from_config(train_config, peak=hyper["learning_rate"],
                                     warmup=hyper["warmup_steps"], clip_norm=hyper["clip_norm"])
    teacher_forcing = None
    if sampling:
      def teacher_forcing(i):
        return schedules.traced_schedule(i, hyper["teacher_forcing"])
    train_step = step.make_train_step(
        model, tx, teacher_forcing, hyper["label_smoothing"], normalization,
        learning_rate=optim.learning_rate_schedule(train_config, hyper["learning_rate"],
                                                   hyper["warmup_steps"]),
        accumulate=train_config.grad_accum_steps > 1, ema_decay=train_config.ema_decay)
    return masked(train_step, state, batch, rng, alive)

  def stacked_step(states, batches, rngs, hypers, alive):
    return parallel.map_members(member_step, (states, batches, rngs, hypers, alive), vmap_width)

  return stacked_step
