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
cached in `DIR/jax_cache`, shared by the members.

`--stack` trains members that differ only in seed, learning rate, clip norm,
label smoothing or teacher-forcing schedule as one vmapped program in one
process (`seq2seq_jax.sweep_stacks`, `training.loop`); each member keeps
its workdir, status and log (a link to `DIR/logs/stack-J.log`). `--list`
shows each member's stack J; `--stack_index=J` runs stack J alone (an array job
over stacks), while `--index=K` still runs member K alone, in a stack of its own.
"""

import fcntl
import inspect
import json
import logging
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
import traceback

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from seq2seq_jax import cli, config_checks, config_utils, files, hyper, sweep_stacks, sweep_summary
from seq2seq_jax.cli import fail as _fail
from seq2seq_jax.cli import parse_flags

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
_MEMBERS = flags.DEFINE_string("members", None, "Internal: the members a --worker stack trains.")
_GHOSTS = flags.DEFINE_string("ghosts", "", "Internal: the stack's other members, frozen "
                              "slots that keep the compiled program (and its rounding) as it was.")
_RETRY = flags.DEFINE_bool("retry_failed", False, "Also run members whose run failed.")
_SUMMARIZE = flags.DEFINE_bool("summarize", False, "Only write the summary of what has run.")
_WORKER = flags.DEFINE_bool("worker", False, "Internal: train member --index in this process.")
_SWEEP_ONLY = ("parallel", "list", "index", "retry_failed", "summarize", "worker", "workdir",
               "stack", "stack_index", "members", "ghosts")

log = logging.getLogger("seq2seq_jax.sweep")


class SweepError(ValueError):
  pass


# ----- members -----

class Member:
  def __init__(self, index: int, name: str, overrides: dict, config, root: Path):
    self.index, self.name, self.overrides, self.config = index, name, overrides, config
    self.workdir = root / "members" / name
    self.status_path = root / "status" / f"{name}.json"
    self.lock_path = root / "status" / f"{name}.lock"
    self.log_path = root / "logs" / f"{name}.log"

  def status(self) -> dict:
    try:
      return json.loads(self.status_path.read_text())
    except (OSError, ValueError):
      return {}

  def write_status(self, **fields) -> None:
    self.status_path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomically(self.status_path, json.dumps({**self.status(), **fields}, indent=1)
                           + "\n")

  def locked(self) -> bool:
    """Whether a live process holds this member's lock."""
    if not self.lock_path.exists():
      return False
    with open(self.lock_path) as f:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        return True
      fcntl.flock(f, fcntl.LOCK_UN)
      return False

  def state(self) -> str:
    """pending | running | interrupted | done | failed."""
    state = self.status().get("state")
    if state == "running":
      return "running" if self.locked() else "interrupted"
    return state or ("interrupted" if self.workdir.exists() else "pending")


def load_sweep(config_arg: str) -> list[dict]:
  """`get_sweep([arg])` of the config file `path[:arg]`."""
  path, _, arg = config_arg.partition(":")
  module = config_utils.load_module(path)
  get_sweep = getattr(module, "get_sweep", None)
  if get_sweep is None:
    raise SweepError(f"{path} defines no get_sweep(); see seq2seq_jax/hyper.py")
  takes_arg = bool(inspect.signature(get_sweep).parameters)
  if arg and not takes_arg:
    raise SweepError(f"{path}: get_sweep() takes no argument, got {arg!r}")
  members = get_sweep(arg or None) if takes_arg else get_sweep()
  if not members:
    raise SweepError(f"{path}: get_sweep() returned no members")
  return members


def apply_overrides(config, overrides: dict, label: str):
  """A copy of `config` with `overrides` (`{"model.cell": "gru"}`) set; a
  field that does not exist or a value of the wrong type names the member."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.lock()
  for field, value in overrides.items():
    node, parts = config, field.split(".")
    try:
      for part in parts[:-1]:
        node = node[part]
      if parts[-1] not in node:
        raise KeyError(parts[-1])
      node[parts[-1]] = tuple(value) if isinstance(node[parts[-1]], tuple) else value
    except (KeyError, AttributeError, TypeError) as e:
      raise SweepError(f"member {label}: cannot set {field}={value!r} ({type(e).__name__}: "
                       f"{e})") from None
  return config


def expand(config, config_arg: str, root: Path) -> list[Member]:
  """The sweep's members, each config checked before anything runs."""
  sweep = load_sweep(config_arg)
  names = hyper.member_names(sweep)
  members = []
  for index, (name, overrides) in enumerate(zip(names, sweep)):
    member_config = apply_overrides(config, overrides, f"{index} ({name})")
    try:
      config_checks.validate(member_config)
    except ValueError as e:
      raise SweepError(f"member {index} ({name}): {e}") from None
    members.append(Member(index, name, overrides, member_config, root))
  return members


# ----- one member, in this process -----

def run_worker(member: Member, cache_dir: Path) -> int:
  member.lock_path.parent.mkdir(parents=True, exist_ok=True)
  lock = open(member.lock_path, "w")
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    print(f"error: member {member.name} is running in another process", file=sys.stderr)
    return sweep_stacks.LOCKED_EXIT
  jax.config.update("jax_compilation_cache_dir", str(cache_dir))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  attempts = member.status().get("attempts", 0) + 1
  member.write_status(state="running", pid=os.getpid(), started=time.time(), attempts=attempts,
                      error=None, index=member.index, overrides=member.overrides)
  # Only a member's process trains: the loop's imports (tensorboardX, orbax: 2.2 s,
  # measured) would slow down --list, --summarize and the driver's errors.
  from seq2seq_jax.training import run
  t0 = time.time()
  try:
    results = run.train_and_evaluate(member.config, member.workdir)
  except KeyboardInterrupt as e:  # the loop's stop says which signal and the step
    member.write_status(state="interrupted", error=str(e) or "interrupted (SIGINT)")
    return getattr(e, "exit_code", 130)
  except BaseException as e:  # noqa: B036  a failed member is recorded, whatever it raised
    traceback.print_exc()
    message = " ".join(f"{type(e).__name__}: {e}".split())
    member.write_status(state="failed", finished=time.time(), error=message[:500])
    return 1
  member.write_status(state="done", finished=time.time(), wall_s=time.time() - t0, error=None,
                      dev_bleu=results["dev"]["metrics"]["bleu"],
                      test_bleu=results["test"]["metrics"]["bleu"])
  return 0


# ----- the sweep -----

def _child_argv(argv: list[str], job: list[Member], ghosts: list[Member], number: int
                ) -> list[str]:
  """This command's flags for one member or stack: the config and its overrides."""
  out, skip = [], False
  for arg in argv[1:]:
    if skip:
      skip = False
      continue
    name = arg.lstrip("-").split("=", 1)[0]
    if name in _SWEEP_ONLY or name.startswith("no") and name[2:] in _SWEEP_ONLY:
      skip = "=" not in arg and name in ("parallel", "index", "workdir", "stack",
                                         "stack_index", "members", "ghosts")
      continue
    out.append(arg)
  which = [f"--index={job[0].index}"] if len(job) + len(ghosts) == 1 else [
      f"--stack_index={number}", f"--members={','.join(str(m.index) for m in job)}",
      f"--ghosts={','.join(str(m.index) for m in ghosts)}"]
  return [sys.executable, "-m", "seq2seq_jax.sweep", *out,
          f"--workdir={Path(_WORKDIR.value).resolve()}", *which, "--worker"]


def _last_line(path: Path) -> str:
  try:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
  except OSError:
    return ""
  return lines[-1] if lines else ""


class Display:
  """Sweep-level progress: done / running / failed, ETA."""

  def __init__(self, total: int, parallel: int):
    self.total, self.parallel, self.walls = total, parallel, []

  def line(self, done, running, failed, todo) -> str:
    eta = ""
    if self.walls and (running or todo):
      per = sum(self.walls) / len(self.walls)
      eta = f", ETA {per * (todo + running / 2) / self.parallel / 60:.1f} min"
    return (f"[sweep] {done}/{self.total} done, {running} running, {failed} failed, "
            f"{todo} waiting{eta}")


def run_sweep(stacks: list[tuple[int, list[Member]]], argv, parallel: int,
              retry_failed: bool) -> int:
  """Runs the `stacks` (lists of members; one process each) whose members need it."""
  root = Path(_WORKDIR.value).resolve()
  for sub in ("members", "status", "logs"):
    (root / sub).mkdir(parents=True, exist_ok=True)
  queue, skipped_failed = [], []
  for number, job in stacks:
    todo, retried = [], []
    for m in job:
      state = m.state()
      if state == "done":
        continue
      if state == "running":
        log.info("%s is running in another process; not started here", m.name)
        continue
      if state == "failed":
        (retried if retry_failed else skipped_failed).append(m)
        continue
      todo.append(m)
    if todo:
      queue.append((number, todo, [m for m in job if m not in todo]))
    if retried:  # from step 0, so not beside members that resume
      queue.append((number, retried, []))
  for m in skipped_failed:
    log.info("%s failed before (%s); --retry_failed runs it again", m.name,
             m.status().get("error"))
  display = Display(sum(len(job) for _, job in stacks), parallel)
  running: dict = {}  # stack number -> (members, Popen, start time)
  failed_now = []

  def counts():
    states = [m.state() for _, job in stacks for m in job]
    return (states.count("done"), sum(len(job) for job, _, _ in running.values()),
            states.count("failed") + len([m for m in failed_now if m.state() != "failed"]),
            sum(len(job) for _, job, _ in queue))

  cli.interrupt_on_sigterm()
  try:
    _run_queue(queue, running, parallel, argv, display, counts, failed_now)
  except KeyboardInterrupt as e:
    # Members in flight are stopped and left resumable.
    for _, proc, _ in running.values():
      proc.terminate()
    for job, proc, _ in running.values():
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
      for m in job:  # a member stopped at a step has said so itself
        if m.status().get("state") not in ("done", "failed", "interrupted"):
          m.write_status(state="interrupted", error="sweep interrupted")
    cli.fail_interrupted(e, "while the sweep ran; its members in flight stopped at a step "
                         "boundary: the same command resumes them")
  return 1 if failed_now or any(m.state() == "failed" for _, job in stacks for m in job) else 0


def _start(number: int, job: list[Member], ghosts: list[Member], argv):
  if len(job) + len(ghosts) == 1:
    log_path = job[0].log_path
  else:
    log_path = job[0].log_path.parent / f"stack-{number}.log"
    sweep_stacks.link_logs(job, log_path)
  with open(log_path, "ab") as out:
    proc = subprocess.Popen(_child_argv(argv, job, ghosts, number), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=sweep_stacks.die_with_driver)
  what = job[0].name if len(job) == 1 else f"stack {number} ({len(job)} members)"
  log.info("started %s (pid %d)", what, proc.pid)
  return proc


def _finished(job: list[Member], rc: int, wall: float, display, failed_now) -> None:
  """Records how a member's or stack's process ended."""
  for m in job:
    state = m.status().get("state")
    if rc == sweep_stacks.LOCKED_EXIT:  # lost the race for the lock: the status is the winner's
      log.warning("%s is running in another process; left to it", m.name)
      failed_now.append(m)
    elif state == "done":
      display.walls.append(wall / len(job))
      log.info("done %s in %.0f s (dev BLEU %.2f)", m.name, wall, m.status().get("dev_bleu", 0))
    elif rc < 0 or state == "interrupted":  # killed, or stopped at a step by SIGINT/SIGTERM
      why = f"killed by {signal.Signals(-rc).name}" if rc < 0 else m.status().get("error")
      if state != "failed":
        m.write_status(state="interrupted", error=why)
      failed_now.append(m)
      log.error("FAILED %s: %s; a rerun resumes it from its last checkpoint", m.name, why)
    else:
      if state != "failed":
        m.write_status(state="failed", error=_last_line(m.log_path) or f"exit code {rc}")
      failed_now.append(m)
      log.error("FAILED %s: %s (log: %s)", m.name, m.status().get("error"), m.log_path)


def _run_queue(queue, running, parallel, argv, display, counts, failed_now) -> None:
  last_print = 0.0
  while queue or running:
    while queue and len(running) < parallel:
      number, job, ghosts = queue.pop(0)
      running[number] = (job, _start(number, job, ghosts, argv), time.time())
    time.sleep(0.2)
    for number, (job, proc, start) in list(running.items()):
      rc = proc.poll()
      if rc is None:
        continue
      del running[number]
      _finished(job, rc, time.time() - start, display, failed_now)
    if time.time() - last_print > 30 or not (queue or running):
      log.info(display.line(*counts()))
      last_print = time.time()


def _print_list(members: list[Member], stacks) -> None:
  stack_of = {m.index: number for number, job in stacks for m in job}
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
  try:
    members = expand(config, config_arg, root)
  except (SweepError, OSError, ValueError) as e:
    _fail(e)
  index, stack_index = _INDEX.value, _STACK_INDEX.value
  if index is not None and not 0 <= index < len(members):
    _fail(f"--index={index} is out of range: the sweep has {len(members)} members "
          f"(0-{len(members) - 1})")
  if _WORKER.value and _MEMBERS.value:
    job = [members[int(k)] for k in _MEMBERS.value.split(",")]
    ghosts = [members[int(k)] for k in _GHOSTS.value.split(",") if k]
    sys.exit(sweep_stacks.run_stack_worker(job, ghosts, root / "jax_cache", stack_index))
  if _WORKER.value:
    sys.exit(run_worker(members[index], root / "jax_cache"))
  try:
    stacks = list(enumerate(sweep_stacks.plan(members, sweep_stacks.parse_option(_STACK.value))))
  except ValueError as e:
    _fail(e)
  if _LIST.value:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--list | head` ends quietly
    _print_list(members, stacks)
    return
  if index is not None and stack_index is not None:
    _fail("--index (a member) and --stack_index (a stack) are exclusive")
  if stack_index is not None and not 0 <= stack_index < len(stacks):
    _fail(f"--stack_index={stack_index} is out of range: with --stack={_STACK.value} the "
          f"sweep has {len(stacks)} stacks (0-{len(stacks) - 1}; see --list)")
  if not _SUMMARIZE.value:
    if _PARALLEL.value < 1:
      _fail(f"--parallel must be >= 1, got {_PARALLEL.value}")
    if index is not None:
      stacks = [(index, [members[index]])]
    elif stack_index is not None:
      stacks = [stacks[stack_index]]
    code = run_sweep(stacks, argv, _PARALLEL.value, _RETRY.value)
    if index is not None or stack_index is not None:
      sys.exit(code)
  else:
    code = 0
  paths = sweep_summary.summarize(root, members)
  print(f"summary: {paths['markdown']}")
  sys.exit(code)


if __name__ == "__main__":
  main(sys.argv)
