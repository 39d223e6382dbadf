r"""Runs the members of a config's sweep, each in its own process and workdir.

    python -m seq2seq_jax.sweep --config=configs/X.py[:ARG] --workdir=DIR [--parallel=2] \
        [--stack=auto|K|1] [--list] [--index=K | --stack_index=J] [--retry_failed] \
        [--summarize] [--config.FIELD=VALUE ...]

The config file defines `get_sweep()` (see `seq2seq_jax.hyper`). Member K
trains in `DIR/members/NAME` exactly as `seq2seq_jax.main` would, in a process
of its own (a crash, an out-of-memory kill or a NaN there leaves the others
alone); its output goes to `DIR/logs/NAME.log`, its state to
`DIR/status/NAME.json`. Running the command again skips finished members,
resumes interrupted ones (killed, or the sweep itself stopped) from their
checkpoints, and retries failed ones (an error in the run) only with
`--retry_failed`. `--index=K` runs member K alone, so that a scheduler's array
job (SLURM, a Kubernetes indexed Job) can spread the sweep over machines; a
per-member lock keeps two processes off one member. Compiled programs are
cached in `DIR/jax_cache`, shared by the members (or in $JAX_COMPILATION_CACHE_DIR if set).

`--stack` trains members that differ only in seed, learning rate, clip norm,
label smoothing or teacher-forcing schedule as one program in one
process (`seq2seq_jax.sweep.stacks`, `training.loop`); each member keeps
its workdir, status and log (a link to `DIR/logs/stack-J.log`). `--list`
shows each member's stack J; `--stack_index=J` runs stack J alone (an array job
over stacks), while `--index=K` still runs member K alone, in a stack of its own.
"""

import logging
from pathlib import Path
import signal
import sys

from absl import flags
from ml_collections import config_flags

from seq2seq_jax.cli import config_file_error, parse_flags
from seq2seq_jax.cli import fail as _fail
from seq2seq_jax.sweep import driver, stacks, summary, worker
from seq2seq_jax.sweep.members import Member, SweepError, expand

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file with get_sweep() "
                                          "(`configs/NAME.py[:ARG]`).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Members run at once.")
_LIST = flags.DEFINE_bool("list", False, "Print the members and their state, run nothing.")
_INDEX = flags.DEFINE_integer("index", None, "Run only member K (0-based), alone.")
_STACK = flags.DEFINE_string("stack", "auto", "Members trained as one program: auto (every "
                             "member that can share one; split if the device cannot hold "
                             "them), K (at most K), or 1 (one process per member).")
_STACK_INDEX = flags.DEFINE_integer("stack_index", None, "Run only stack J (see --list).")
_RETRY = flags.DEFINE_bool("retry_failed", False, "Also run members whose run failed.")
_SUMMARIZE = flags.DEFINE_bool("summarize", False, "Only write the summary of what has run.")
# The flags of the sweep itself; the rest (the config and its overrides) go to its stacks.
_SWEEP_ONLY = ("parallel", "list", "index", "retry_failed", "summarize", "workdir", "stack",
               "stack_index") + worker.FLAGS

log = logging.getLogger("seq2seq_jax.sweep")


def _print_list(members: list[Member], planned) -> None:
  stack_of = {m.index: number for number, job in planned for m in job}
  for m in members:
    status = m.status()
    extra = f"  ({status['error']})" if status.get("error") else ""
    print(f"{m.index}\t{m.state()}\t{m.name}\tstack {stack_of[m.index]}{extra}")


def main(argv) -> None:
  config = parse_flags(argv, _CONFIG)
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                      datefmt="%H:%M:%S")
  logging.getLogger("seq2seq_jax").setLevel(logging.INFO)
  root = Path(_WORKDIR.value).resolve()
  config_arg = flags.FLAGS["config"].serialize().split("=", 1)[1]
  if _SUMMARIZE.value and not root.is_dir():
    _fail(f"--workdir={root}: no such directory: no member of this sweep has run (without "
          "--summarize the command runs them)")
  try:
    members = expand(config, config_arg, root)
  except Exception as e:  # noqa: BLE001  get_sweep() is user code: an error in it is one line
    in_file = config_file_error(e, config_arg.partition(":")[0])
    if in_file is None and not isinstance(e, (SweepError, OSError, ValueError)):
      raise
    _fail(in_file or e)
  index, stack_index = _INDEX.value, _STACK_INDEX.value
  if index is not None and not 0 <= index < len(members):
    _fail(f"--index={index} is out of range: the sweep has {len(members)} members "
          f"(0-{len(members) - 1})")
  if worker.requested():  # a stack's process, started by the driver
    sys.exit(worker.run_requested(members, root / "jax_cache", stack_index))
  try:
    planned = list(enumerate(stacks.plan(members, stacks.parse_option(_STACK.value))))
  except ValueError as e:
    _fail(e)
  if _LIST.value:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--list | head` ends quietly
    _print_list(members, planned)
    return
  if index is not None and stack_index is not None:
    _fail("--index (a member) and --stack_index (a stack) are exclusive")
  if stack_index is not None and not 0 <= stack_index < len(planned):
    _fail(f"--stack_index={stack_index} is out of range: with --stack={_STACK.value} the "
          f"sweep has {len(planned)} stacks (0-{len(planned) - 1}; see --list)")
  if not _SUMMARIZE.value:
    if _PARALLEL.value < 1:
      _fail(f"--parallel must be >= 1, got {_PARALLEL.value}")
    if index is not None:
      planned = [(index, [members[index]])]
    elif stack_index is not None:
      planned = [planned[stack_index]]
    code = driver.run_sweep(planned, argv, root, _SWEEP_ONLY, _PARALLEL.value, _RETRY.value)
    if index is not None or stack_index is not None:
      sys.exit(code)
  else:
    code = 0
  paths = summary.summarize(root, members)
  print(f"summary: {paths['markdown']}")
  sys.exit(code)


if __name__ == "__main__":
  main(sys.argv)
