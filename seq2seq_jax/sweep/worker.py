"""A stack's process: trains its members (one, or a stack of K) in one loop.

The driver starts it as `python -m seq2seq_jax.sweep ... --members=I,J --ghosts=K
--worker`: the sweep's own config and overrides, the members to train and the
planned stack's other members (frozen slots). Its flags are internal, defined
here rather than in the CLI module, so that `sweep --help` does not list them.
"""

import fcntl
import os
import time
import traceback

from absl import flags
import jax

from seq2seq_jax import cli
from seq2seq_jax.sweep import stacks

_MEMBERS = flags.DEFINE_string("members", None, "Internal: the members this stack process "
                               "trains.")
_GHOSTS = flags.DEFINE_string("ghosts", "", "Internal: the stack's other members, frozen "
                              "slots that keep the compiled program (and its rounding) as it was.")
_WORKER = flags.DEFINE_bool("worker", False, "Internal: train --members in this process.")
FLAGS = ("members", "ghosts", "worker")


def flags_for(job: list, ghosts: list) -> list[str]:
  """The flags that make a sweep command the process of `job` beside its `ghosts`."""
  return [f"--members={','.join(str(m.index) for m in job)}",
          f"--ghosts={','.join(str(m.index) for m in ghosts)}", "--worker"]


def requested() -> bool:
  return _WORKER.value


def run_requested(members: list, cache_dir, stack_number: int | None) -> int:
  """`run_worker` of the members the flags name (indexes into the sweep's `members`)."""
  job = [members[int(k)] for k in _MEMBERS.value.split(",")]
  ghosts = [members[int(k)] for k in _GHOSTS.value.split(",") if k]
  return run_worker(job, ghosts, cache_dir, stack_number)


def run_worker(members: list, ghosts: list, cache_dir, stack_number: int | None) -> int:
  """Trains `members` as one stack in this process, recording each member's state.

  `ghosts` are the planned stack's other members (done, failed, or retried
  elsewhere): they keep their slots, frozen, so that the compiled program and
  so the members' rounding are those of the stack as it first ran, and a
  resumed stack computes exactly what an uninterrupted one does. Their files
  are not touched.
  """
  cli.watch_stop_signals()  # a member stuck in a device call still ends (as interrupted)
  locks, mine = [], []
  for m in members:
    m.lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(m.lock_path, "w")
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      print(f"member {m.name} is running in another process; left to it")
      lock.close()
      continue
    locks.append(lock)
    mine.append(m)
  if not mine:
    return stacks.LOCKED_EXIT
  if not jax.config.jax_compilation_cache_dir:  # one the user set ($JAX_COMPILATION_CACHE_DIR) wins
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  started = time.time()
  for m in mine:
    m.write_status(state="running", pid=os.getpid(), started=started,
                   attempts=m.status().get("attempts", 0) + 1, error=None, index=m.index,
                   overrides=m.overrides, stack=stack_number)

  def on_member_end(k, results, error):
    if error is not None:
      mine[k].write_status(state="failed", finished=time.time(), error=error[:500])
    else:
      mine[k].write_status(state="done", finished=time.time(), wall_s=time.time() - started,
                           dev_bleu=results["dev"]["metrics"]["bleu"],
                           test_bleu=results["test"]["metrics"]["bleu"])

  from seq2seq_jax.training import loop  # the loop's imports only where it trains
  try:
    order = sorted(members + ghosts, key=lambda m: m.index)  # the planned slots
    active = [m in mine for m in order]
    configs = [m.config for m in order]
    workdirs = [m.workdir for m in order]
    mine_slot = {k: mine.index(m) for k, m in enumerate(order) if m in mine}
    loop.train_members(
        configs, workdirs, lambda k, *args: on_member_end(mine_slot[k], *args), active=active)
  except KeyboardInterrupt as e:  # the loop's stop says which signal and the step
    for m in mine:
      if m.status().get("state") == "running":
        m.write_status(state="interrupted", error=str(e) or "interrupted (SIGINT)")
    return getattr(e, "exit_code", 130)
  except BaseException as e:  # noqa: B036  every member still running is recorded failed
    traceback.print_exc()
    message = " ".join(f"{type(e).__name__}: {e}".split())
    for m in mine:
      if m.status().get("state") == "running":
        m.write_status(state="failed", finished=time.time(), error=message[:500])
    return 1
  return 1 if any(m.status().get("state") == "failed" for m in mine) else 0
