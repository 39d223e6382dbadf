"""Orbax checkpoints of a run: the last N under `last/`, the best by dev BLEU (or by the
early-stopping metric, when early stopping is on) under `best/`."""

import atexit
import contextlib
import errno
import logging
from pathlib import Path
import re
import shutil
import sys
import time

import jax
import orbax.checkpoint as ocp

from seq2seq_jax import parallel

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  pass


DISK_MARGIN_BYTES = 2**20


def disk_full(directory: Path, resumable_step: int | None, what: str) -> str:
  """The message of a full disk: where, what failed and what to do."""
  return (f"the disk holding {directory.parent} is full ({what}): free space, or keep fewer "
          "checkpoints (train.keep_checkpoints), then run the same command: " +
          (f"it resumes from checkpoint {resumable_step}" if resumable_step is not None
           else "it starts over"))


def _args(state, meta, restore=False):
  if restore:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                              meta=ocp.args.JsonRestore())
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


class Checkpoints:
  """Saves `(state, meta)` pairs; `meta` is JSON (the step, the data position)."""

  def __init__(self, directory: Path, keep: int, create: bool = True, best_metric: str = "bleu",
               higher_is_better: bool = True):
    _quiet_reads_left_in_flight()
    self.directory = Path(directory).resolve()  # orbax wants absolute paths
    self.best_metric = best_metric
    # A best/ checkpoint saved under another metric (the run's early stopping was
    # changed) ranks last: the first one under this metric replaces it.
    worst = float("-inf") if higher_is_better else float("inf")
    if not create and not (self.directory / "last").is_dir():
      raise CheckpointError(f"no checkpoints in {self.directory}")
    names = ("state", "meta")
    # Across processes, each manager's barriers need their own names: `last` and
    # `best` save the same step at once, and orbax names barriers by the step.
    self.last = ocp.CheckpointManager(
        self.directory / "last", item_names=names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, cleanup_tmp_directories=create,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="last")))
    self.best = ocp.CheckpointManager(
        self.directory / "best", item_names=names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=create, best_mode="max" if higher_is_better else "min",
            cleanup_tmp_directories=create,
            best_fn=lambda metrics: metrics.get(best_metric, worst),
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="best")))

  def save(self, step: int, state, meta: dict, score: float | None = None) -> None:
    """Starts the (asynchronous) saves of `step` to `last/` and, with its dev `score`
    (of `best_metric`), `best/`; first checks that the disk has room for them."""
    to_last = step not in self.last.all_steps()
    self._check_space(step, state, to_last + (score is not None))
    with self._disk_full_as_oserror(step):
      if to_last:
        self.last.save(step, args=_args(state, meta))
      if score is not None:
        self.best.save(step, args=_args(state, meta), metrics={self.best_metric: score})

  def _check_space(self, step: int, state, copies: int) -> None:
    """A full disk found before a save, not in the middle of orbax's threads (whose
    failure prints dozens of tracebacks): the saves need about the state's bytes
    each, the margin is for metrics, plots and orbax's metadata."""
    if not copies:
      return
    self.wait()  # the saves in flight take their room first (orbax would wait for them too)
    need = copies * sum(x.nbytes for x in jax.tree.leaves(state)) + DISK_MARGIN_BYTES
    free = shutil.disk_usage(self.directory).free
    if free < need:
      raise OSError(errno.ENOSPC, disk_full(self.directory, self.last.latest_step(),
                                            f"{free / 1e6:.1f} MB free, checkpoint {step} "
                                            f"needs {need / 1e6:.1f} MB"))

  @contextlib.contextmanager
  def _disk_full_as_oserror(self, step: int):
    """Orbax reports a full disk as a ValueError (tensorstore's RESOURCE_EXHAUSTED)."""
    try:
      yield
    except Exception as e:  # noqa: BLE001  only a full disk is translated
      if "No space left on device" not in str(e):
        raise
      raise OSError(errno.ENOSPC, disk_full(self.directory, self.last.latest_step(),
                                            f"writing checkpoint {step} failed")) from None

  def repair_best(self, step: int, state, meta: dict, score: float) -> None:
    """Offers evaluation step `step`, just resumed from `last/`, to `best/` again:
    a run stopped between an evaluation's two saves has it in `last/` only."""
    if step not in self.best.all_steps():
      log.warning("checkpoint %d is in last/ but was never offered to best/ (the run was "
                  "stopped between the two saves); saving it there now", step)
      self.best.save(step, args=_args(state, meta), metrics={self.best_metric: score})

  def _move_aside(self, step: int) -> Path:
    """Moves the unreadable `last/<step>` to `damaged/last-<step>`, out of orbax's
    way, so that the step is written afresh and `translate` never meets it."""
    target = self.directory / "damaged" / f"last-{step}"
    if parallel.is_primary():
      target.parent.mkdir(exist_ok=True)
      if target.exists():
        shutil.rmtree(target)
      shutil.move(str(self.directory / "last" / str(step)), target)
    parallel.barrier(f"moved aside {step}")
    self.last.reload()
    return target

  def wait(self) -> None:
    with self._disk_full_as_oserror(self.last.latest_step()):
      self.last.wait_until_finished()
      self.best.wait_until_finished()

  def restore_latest(self, template, steps=None):
    """The newest readable checkpoint (of `steps`, default all) as `(state, meta)`,
    or None if there is none.

    A checkpoint that cannot be read is reported and skipped for the one
    before it; if none can be read, a `CheckpointError` names them.
    """
    steps = sorted(self.last.all_steps() if steps is None else steps, reverse=True)
    failures = []
    for step in steps:
      try:
        restored = self.last.restore(step, args=_args(template, None, restore=True))
      except Exception as e:  # orbax raises many types for damaged files
        _after_a_failed_read()
        failures.append((step, self.directory / "last" / str(step), _reason(e)))
        continue
      for bad, path, reason in failures:
        log.error("checkpoint %s is unreadable (%s); moved to %s, resuming from step %d",
                  path, reason, self._move_aside(bad), step)
      return restored.state, restored.meta
    if failures:
      raise CheckpointError(f"no readable checkpoint in {self.directory / 'last'}; "
                            f"unreadable: {', '.join(str(p) for _, p, _ in failures)}. Move "
                            "them away to start over.")
    return None

  def _average_manager(self, create: bool):
    if not create and not (self.directory / "average").is_dir():
      raise CheckpointError(f"no averaged checkpoint in {self.directory / 'average'}: make one "
                            f"with python -m seq2seq_jax.average --workdir="
                            f"{self.directory.parent}")
    return ocp.CheckpointManager(self.directory / "average", item_names=("state", "meta"),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=1,
                                                                      create=create))

  def save_average(self, step: int, state, meta: dict) -> None:
    """`average/<step>`, replacing an earlier average (`seq2seq_jax.average`)."""
    manager = self._average_manager(create=True)
    for old in manager.all_steps():
      manager.delete(old)
    manager.save(step, args=_args(state, meta), force=True)
    manager.wait_until_finished()
    manager.close()

  def restore(self, which: str, template):
    """`(state, meta)` of checkpoint `which`: "best", "last", "average" or a step number."""
    if which == "average":
      manager = self._average_manager(create=False)
      step = manager.latest_step()
    elif which == "best":
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
      raise CheckpointError(f"--checkpoint must be best, last, average or a step number, got "
                            f"{which!r}")
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory / 'last'}")
    try:
      restored = manager.restore(step, args=_args(template, None, restore=True))
    except Exception as e:  # orbax raises many types for damaged files
      _after_a_failed_read()
      raise CheckpointError(f"checkpoint {step} in {manager.directory} is unreadable "
                            f"({_reason(e)})") from None
    return restored.state, restored.meta

  def close(self) -> None:
    self.wait()
    for manager in (self.last, self.best):
      # A new manager cleans up older runs' temporary directories in a thread of its
      # own, which its close() does not wait for (orbax 0.12): left running, it met
      # the interpreter's shutdown and printed a traceback under a stopped start's
      # one error line. Orbax awaits it itself before a first save.
      cleanup = getattr(manager, "_cleanup_tmp_directory_future", None)
      if cleanup is not None:
        cleanup.result()
      manager.close()


def _after_a_failed_read() -> None:
  """A read that ends during the interpreter's shutdown, past the hook, prints anyway
  (1 suite run in 3): at exit, a moment for the last of them while the hook holds."""
  if not _PAUSED:
    _PAUSED.append(True)
    atexit.register(time.sleep, 0.3)


_PAUSED = []


def _reason(e: Exception) -> str:
  """The first line of orbax's error, without the reprs of tensorstore's objects."""
  text = re.sub(r"<bound method [^>]*>|<[\w.]+ object at 0x[0-9a-f]+>", "...", str(e))
  return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"


_QUIETED = []


def _quiet_reads_left_in_flight() -> None:
  """Once orbax fails to read a damaged checkpoint, tensorstore's reads still in
  flight end on orbax's closed event loop: each printed `RuntimeError: Event loop is
  closed` (an unraisable exception) or asyncio's `Task exception was never retrieved`,
  dozens of tracebacks around the one error line, from within the failing restore on.
  Those two, only, are dropped, from before the first read (`Checkpoints()`)."""
  if _QUIETED:
    return
  _QUIETED.append(True)
  previous = sys.unraisablehook

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(
      lambda record: "exception was never retrieved" not in record.getMessage())

