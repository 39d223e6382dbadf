"""The sweep's driver: runs each planned stack (a solo member is a stack of one)
in a process of its own, at most `--parallel` at once, and records how each ended."""

import functools
import logging
from pathlib import Path
import signal
import subprocess
import sys
import time

from seq2seq_jax import cli
from seq2seq_jax.sweep import stacks as sweep_stacks
from seq2seq_jax.sweep import worker
from seq2seq_jax.sweep.members import Member

log = logging.getLogger("seq2seq_jax.sweep")


def _child_argv(argv: list[str], sweep_only: tuple, root: Path, job: list[Member],
                ghosts: list[Member], number: int) -> list[str]:
  """The command of one stack's process: this command's config and overrides
  (not the sweep's own flags, `sweep_only`), its members and frozen slots."""
  out, skip = [], False
  for arg in argv[1:]:
    if skip:
      skip = False
      continue
    name = arg.lstrip("-").split("=", 1)[0]
    if name in sweep_only or name.startswith("no") and name[2:] in sweep_only:
      skip = "=" not in arg and name not in ("list", "retry_failed", "summarize", "worker")
      continue
    out.append(arg)
  return [sys.executable, "-m", "seq2seq_jax.sweep", *out, f"--workdir={root}",
          f"--stack_index={number}", *worker.flags_for(job, ghosts)]


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


def run_sweep(stacks: list[tuple[int, list[Member]]], argv, root: Path, sweep_only: tuple,
              parallel: int, retry_failed: bool) -> int:
  """Runs the `stacks` (lists of members; one process each) whose members need it."""
  for sub in ("members", "status", "logs"):
    (root / sub).mkdir(parents=True, exist_ok=True)
  cli.interrupt_on_sigterm(grace=False)  # it waits on its members, which have their own
  try:  # e.g. a killed driver's orphaned stack, finishing its step: then resumed here
    wait_for_others([m for _, job in stacks for m in job if m.state() == "running"])
  except KeyboardInterrupt as e:
    cli.fail_interrupted(e, "while waiting for members that run in another process (they go "
                         "on there)")
  queue, skipped_failed, elsewhere = [], [], []
  for number, job in stacks:
    todo, retried = [], []
    for m in job:
      state = m.state()
      if state == "done":
        continue
      if state == "running":  # started elsewhere since the wait
        log.error("%s is running in another process; not started here: rerun when it ends",
                  m.name)
        elsewhere.append(m)
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
  failed_now = list(elsewhere)

  def counts():
    states = [m.state() for _, job in stacks for m in job]
    return (states.count("done"), sum(len(job) for job, _, _ in running.values()),
            states.count("failed") + len([m for m in failed_now if m.state() != "failed"]),
            sum(len(job) for _, job, _ in queue))

  try:
    start = functools.partial(_start, argv=argv, sweep_only=sweep_only, root=root)
    _run_queue(queue, running, parallel, start, display, counts, failed_now)
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


def _start(number: int, job: list[Member], ghosts: list[Member], argv, sweep_only, root):
  if len(job) + len(ghosts) == 1:
    log_path = job[0].log_path
  else:
    log_path = job[0].log_path.parent / f"stack-{number}.log"
    sweep_stacks.link_logs(job, log_path)
  with open(log_path, "ab") as out:
    proc = subprocess.Popen(_child_argv(argv, sweep_only, root, job, ghosts, number), stdout=out,
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
      wait_for_others([m])
      if m.state() == "done":
        log.info("%s: done by another process", m.name)
      else:
        log.error("FAILED %s: it ran in another process and is %s there; a rerun resumes it",
                  m.name, m.state())
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


def wait_for_others(members: list[Member]) -> None:
  """Returns once no other process holds a lock of `members`, saying every 30 s
  which it waits for."""
  busy, said = [m for m in members if m.locked()], 0.0
  while busy:
    if time.time() - said > 30:
      log.info("waiting for %d member(s) running in another process: %s", len(busy),
               ", ".join(f"{m.name} (pid {m.status().get('pid', '?')})" for m in busy))
      said = time.time()
    time.sleep(0.5)
    busy = [m for m in busy if m.locked()]


def _run_queue(queue, running, parallel, start, display, counts, failed_now) -> None:
  last_print = 0.0
  while queue or running:
    while queue and len(running) < parallel:
      number, job, ghosts = queue.pop(0)
      running[number] = (job, start(number, job, ghosts), time.time())
    time.sleep(0.2)
    for number, (job, proc, started) in list(running.items()):
      rc = proc.poll()
      if rc is None:
        continue
      del running[number]
      _finished(job, rc, time.time() - started, display, failed_now)
    if time.time() - last_print > 30 or not (queue or running):
      log.info(display.line(*counts()))
      last_print = time.time()
