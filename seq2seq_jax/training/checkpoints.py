"""Orbax checkpoints of a run: the last N under `last/`, the best by dev BLEU under `best/`."""

import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  pass


def _args(state, meta, restore=False):
  if restore:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                              meta=ocp.args.JsonRestore())
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


class Checkpoints:
  """Saves `(state, meta)` pairs; `meta` is JSON (the step, the data position)."""

  def __init__(self, directory: Path, keep: int, create: bool = True):
    self.directory = Path(directory).resolve()  # orbax wants absolute paths
    if not create and not (self.directory / "last").is_dir():
      raise CheckpointError(f"no checkpoints in {self.directory}")
    names = ("state", "meta")
    self.last = ocp.CheckpointManager(
        self.directory / "last", item_names=names,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create))
    self.best = ocp.CheckpointManager(
        self.directory / "best", item_names=names,
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=create, best_mode="max",
                                             best_fn=lambda metrics: metrics["bleu"]))

  def save(self, step: int, state, meta: dict, bleu: float | None = None) -> None:
    if step not in self.last.all_steps():
      self.last.save(step, args=_args(state, meta))
    if bleu is not None:
      self.best.save(step, args=_args(state, meta), metrics={"bleu": bleu})

  def wait(self) -> None:
    self.last.wait_until_finished()
    self.best.wait_until_finished()

  def restore_latest(self, template):
    """The newest readable checkpoint as `(state, meta)`, or None if there is none.

    A checkpoint that cannot be read is reported and skipped for the one
    before it; if none can be read, a `CheckpointError` names them.
    """
    steps = sorted(self.last.all_steps(), reverse=True)
    failures = []
    for step in steps:
      try:
        restored = self.last.restore(step, args=_args(template, None, restore=True))
      except Exception as e:  # orbax raises many types for damaged files
        path = self.directory / "last" / str(step)
        log.error("checkpoint %s is unreadable (%s: %s); trying an earlier one",
                      path, type(e).__name__, str(e).splitlines()[0][:200])
        failures.append(str(path))
        continue
      return restored.state, restored.meta
    if failures:
      raise CheckpointError(f"no readable checkpoint in {self.directory / 'last'}; "
                            f"unreadable: {', '.join(failures)}. Move them away to start over.")
    return None

  def restore(self, which: str, template):
    """`(state, meta)` of checkpoint `which`: "best", "last" or a step number."""
    if which == "best":
      manager, step = self.best, self.best.latest_step()
      if step is None:
        raise CheckpointError(f"no best checkpoint in {self.directory / 'best'} (the run has "
                              "not been evaluated yet); use --checkpoint=last")
    elif which == "last":
      manager, step = self.last, self.last.latest_step()
    elif str(which).isdigit():
      manager, step = self.last, int(which)
      if step not in self.last.all_steps():
        raise CheckpointError(f"no checkpoint of step {step} in {self.directory / 'last'}; "
                              f"there are: {sorted(self.last.all_steps())}")
    else:
      raise CheckpointError(f"--checkpoint must be best, last or a step number, got {which!r}")
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory / 'last'}")
    try:
      restored = manager.restore(step, args=_args(template, None, restore=True))
    except Exception as e:  # orbax raises many types for damaged files
      raise CheckpointError(f"checkpoint {step} in {manager.directory} is unreadable "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return restored.state, restored.meta

  def close(self) -> None:
    self.wait()
    self.last.close()
    self.best.close()
