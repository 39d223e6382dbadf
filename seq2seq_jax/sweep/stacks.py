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
import signal
import sys

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
