"""Stacks of sweep members: which members train as one program, and the process that trains them.

`plan(members, option)` groups a sweep's members (all of them, in sweep order,
so a stack's number does not depend on what has run) by `training.stack.stack_key`:
members that differ only in the fields a stack lets each member choose (seed,
learning rate and rsqrt warmup, clip norm, label smoothing, teacher-forcing
schedule) share a group, early stopping and warm starts included (a member that
stops is frozen while the others train on). `--stack=auto` makes each group one
stack (the stack's process splits it further if the device cannot hold it),
`--stack=K` cuts groups into
stacks of at most K, `--stack=1` is one process per member.
"""

import ctypes
import fcntl
import os
import signal
import sys
import time
import traceback

import jax

from seq2seq_jax.training import stack

LOCKED_EXIT = 3  # a worker whose members all run in another process: it leaves them alone


def die_with_driver() -> None:
  """In a member's process, before it runs (`Popen(preexec_fn=...)`): SIGTERM when the
  driver dies, even by `kill -9`, so that no member trains on unowned and a rerun never
  starts a second set beside it (the member stops at a step boundary, resumable).
  Linux's `prctl(PR_SET_PDEATHSIG)`; elsewhere members outlive a killed driver."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def parse_option(value: str) -> int | None:
  """`--stack`: "auto" (None) or a positive member count."""
  if value == "auto":
    return None
  if not value.isdigit() or int(value) < 1:
    raise ValueError(f"--stack must be auto or a number >= 1, got {value!r}")
  return int(value)


def plan(members: list, size: int | None) -> list[list]:
  """The sweep's stacks: lists of members, numbered by their first member's index."""
  if size == 1:
    return [[m] for m in members]
  groups: dict[str, list] = {}
  stacks = []
  for m in members:
    groups.setdefault(stack.stack_key(m.config), []).append(m)
  for group in groups.values():
    step = len(group) if size is None else size
    stacks += [group[i:i + step] for i in range(0, len(group), step)]
  return sorted(stacks, key=lambda s: s[0].index)


def link_logs(members: list, stack_log) -> None:
  """Each member's log is a link to its stack's, so `logs/NAME.log` always exists;
  a member's own log from an earlier solo run is kept and says where it goes on."""
  for m in members:
    if m.log_path.is_symlink():
      m.log_path.unlink()
    elif m.log_path.exists():
      with open(m.log_path, "a") as f:
        f.write(f"continued in a stack: {stack_log.name}\n")
      continue
    m.log_path.symlink_to(stack_log.name)


def run_stack_worker(members: list, ghosts: list, cache_dir, stack_number: int) -> int:
  """Trains `members` as one stack in this process, recording each member's state.

  `ghosts` are the planned stack's other members (done, failed, or retried
  elsewhere): they keep their slots, frozen, so that the compiled program and
  so the members' rounding are those of the stack as it first ran, and a
  resumed stack computes exactly what an uninterrupted one does. Their files
  are not touched.
  """
  locks, mine = [], []
  for m in members:
    m.lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(m.lock_path, "w")
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      print(f"member {m.name} is running in another process; left out of this stack")
      lock.close()
      continue
    locks.append(lock)
    mine.append(m)
  if not mine:
    return LOCKED_EXIT
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
