"""Stacked sweep members: K runs of one model shape trained as one program.

Every leaf of the train state, the rng and the member's hyperparameters gets
a leading member axis, and `make_stacked_train_step` maps the solo step over it:
`jax.vmap` on an accelerator, `jax.lax.map` (one member after the other, in
the same program) on a CPU. What a member may choose on its own (`TRACED_FIELDS`) enters the
step as numbers; every other field changes an array shape or a code path, and
members that differ in one train in separate stacks (`stack_key`).

No IO and no jit here, as in `step`: `training.stack_run` jits it.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

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


def trains_alone(config) -> str:
  """Why a member cannot join a stack ("" if it can): early stopping (it may stop at
  its own step) or a warm start (the stacked loop starts every member fresh)."""
  if config.train.get("early_stopping", {}).get("patience", 0):
    return "train.early_stopping.patience > 0 (each member may stop at its own step)"
  if config.train.get("init_from", ""):
    return "train.init_from (a warm start)"
  return ""


def stack_key(config) -> str:
  """The config without the fields a stacked member may choose: members with equal
  keys can share one compiled step. Whether clipping is on stays in the key (it
  changes the optimizer state's layout), its norm does not. A member taught with
  gold tokens throughout may join members with sampling schedules: the stack then
  takes the per-token path for all (`make_stacked_train_step`)."""
  tree = json.loads(json.dumps(config.to_dict()))
  clip_on = bool(tree["train"]["clip_norm"])
  rsqrt = optim.train_field(config.train, "lr_schedule") == "rsqrt"
  traced = TRACED_FIELDS + (RSQRT_TRACED if rsqrt else ())
  for field in traced:
    _drop(tree, field)
  tree["train"]["clip_on"] = clip_on
  return json.dumps(tree, sort_keys=True)


def needs_sampling(config) -> bool:
  """Whether the member's teacher-forcing schedule ever feeds a prediction."""
  return schedules.teacher_forcing_from_config(config.train.teacher_forcing) is not None


def member_hyper(config) -> dict:
  """The traced hyperparameters of one member, as numpy scalars."""
  tc = config.train
  return {"learning_rate": np.float32(tc.learning_rate),
          "warmup_steps": np.float32(optim.train_field(tc, "warmup_steps")),
          "clip_norm": np.float32(tc.clip_norm),
          "label_smoothing": np.float32(tc.label_smoothing),
          "teacher_forcing": schedules.member_parameters(tc.teacher_forcing)}


def stack_trees(trees: list):
  """One tree whose leaves are the members' leaves stacked on a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def member_tree(tree, index: int):
  """Member `index`'s slice of a stacked tree."""
  return jax.tree.map(lambda x: x[index], tree)


def default_vmap_width() -> int | None:
  """How many members a stacked program computes side by side: all on an
  accelerator; on a CPU one at a time (`jax.lax.map`), where one member already
  keeps the cores busy and XLA:CPU's batched kernels were slower per member than
  one member's (measured in `benchmarks/stack.py`)."""
  return 1 if jax.default_backend() == "cpu" else None


def map_members(fn, args, vmap_width: int | None):
  """`fn` over the leading member axis of `args`: `jax.vmap` of all members
  (`vmap_width` None), or `jax.lax.map` over groups of `vmap_width` (1: one by one)."""
  if vmap_width is None:
    return jax.vmap(fn)(*args)
  return jax.lax.map(lambda a: fn(*a), args, batch_size=None if vmap_width == 1 else vmap_width)


def make_stacked_train_step(model, train_config, sampling: bool,
                            vmap_width: int | None = None):
  """Builds `step(states, batches, rngs, hypers, alive) -> (states, metrics)`.

  Args:
    model: built by `models.build`; all members share it.
    train_config: the stack's `config.train` (its non-traced fields are every
      member's).
    sampling: whether any member's schedule feeds predictions; then every member
      runs the per-token path (a member at probability 1 reads gold throughout).
    vmap_width: see `map_members`; `default_vmap_width()` suits the backend.

  Returns:
    the stacked step, not jitted. Every argument and output has a leading member
    axis: `states` (`step.TrainState`), `batches` (`src`, `tgt`), `rngs` (each
    member's `PRNGKey(seed)`), `hypers` (`member_hyper`), `alive` (bool). A member
    whose loss or gradient is not finite, or that is not alive, keeps its state
    (its update is masked out) and comes back with `alive` False; the metrics
    are the solo step's plus `alive`.
  """
  normalization = train_config.loss_normalization

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
                                                   hyper["warmup_steps"]))
    new_state, metrics = train_step(state, batch, rng)
    ok = alive & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    metrics["alive"] = ok
    return new_state, metrics

  def stacked_step(states, batches, rngs, hypers, alive):
    return map_members(member_step, (states, batches, rngs, hypers, alive), vmap_width)

  return stacked_step
