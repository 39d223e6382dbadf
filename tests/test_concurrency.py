"""Two processes on one workdir (issue 32, item 1): the second is refused before it
writes anything, and a dead holder's lock is no lock. Two sweeps on one member
(item 4): the second waits for the first."""

import fcntl
import json
import os
from pathlib import Path
import signal
import subprocess
import sys

import pytest

from seq2seq_jax import files

ROOT = Path(__file__).resolve().parent.parent
QUICK = f"--config={ROOT / 'configs' / 'default.py'}:quick"


def _holder(directory: Path) -> subprocess.Popen:
  """Another process that holds `directory` until it is killed."""
  proc = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from seq2seq_jax import files\n"
       f"with files.hold_directory({str(directory)!r}):\n  print('held', flush=True)\n"
       "  time.sleep(600)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_run_on_a_held_workdir_is_refused_and_writes_nothing(tmp_path):
  """Before: both runs trained to the end, every metrics row written twice."""
  workdir = tmp_path / "run"
  holder = _holder(workdir)
  try:
    lock = (workdir / files.LOCK_NAME).read_text()
    proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.main", QUICK,
                           f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {workdir} is in use by another run (pid {holder.pid} on ")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in workdir.iterdir()) == [files.LOCK_NAME]
    assert (workdir / files.LOCK_NAME).read_text() == lock
  finally:
    holder.kill()
    holder.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
  holder = _holder(tmp_path / "run")
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  with files.hold_directory(tmp_path / "run"):
    assert f"pid {os.getpid()} " in (tmp_path / "run" / files.LOCK_NAME).read_text()


def test_the_lock_is_reentrant_and_leaves_no_directory_it_made(tmp_path):
  workdir = tmp_path / "a" / "b" / "run"
  with files.hold_directory(workdir):
    with files.hold_directory(workdir):  # a stack trained in parts takes it again
      assert (workdir / files.LOCK_NAME).exists()
    assert (workdir / files.LOCK_NAME).exists()
  assert list(tmp_path.iterdir()) == []  # a failed start leaves no workdir
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text("{}")
  with files.hold_directory(workdir):
    pass
  assert [p.name for p in workdir.iterdir()] == ["config.json"]



STACK = f"--config={ROOT / 'tests' / 'configs' / 'stack_quick.py'}:plain"


def _member(root: Path) -> str:
  listing = subprocess.run([sys.executable, "-m", "seq2seq_jax.sweep", STACK, f"--workdir={root}",
                            "--list"], cwd=ROOT, capture_output=True, text=True, check=True)
  return listing.stdout.splitlines()[0].split("\t")[2]


def _sweep_waiting(root: Path, name: str, status: dict | None):
  """`sweep --index=0` started while this process holds member 0's lock (as its
  worker would, with `status` written); returns the sweep once it says it waits."""
  (root / "status").mkdir(parents=True)
  lock = open(root / "status" / f"{name}.lock", "w")
  fcntl.flock(lock, fcntl.LOCK_EX)
  if status is not None:
    (root / "status" / f"{name}.json").write_text(json.dumps(status))
  proc = subprocess.Popen([sys.executable, "-m", "seq2seq_jax.sweep", STACK, f"--workdir={root}",
                           "--index=0"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if "waiting for 1 member(s) running in another process" in line:
      return proc, lock, lines
  raise AssertionError("".join(lines))


@pytest.mark.parametrize("winner_ends", ["done", "not done"])
def test_the_loser_of_two_index_runs_waits_for_the_winner(tmp_path, winner_ends):
  """Before: the loser exited 1 at once (`1 failed`) though the member finished under
  the winner."""
  root = tmp_path / "sweep"
  name = _member(root)
  proc, lock, lines = _sweep_waiting(root, name, None)  # the winner, before its status
  if winner_ends == "done":
    (root / "status" / f"{name}.json").write_text(json.dumps({"state": "done"}))
  lock.close()
  out = "".join(lines) + proc.stdout.read()
  if winner_ends == "done":
    assert proc.wait(timeout=60) == 0, out
    assert f"{name}: done by another process" in out
  else:
    assert proc.wait(timeout=60) == 1, out
    assert f"FAILED {name}: it ran in another process and is pending there; a rerun resumes " \
        "it" in out
    assert not (root / "status" / f"{name}.json").exists()  # the status is the winner's


def test_a_rerun_waits_for_an_orphaned_member_and_then_resumes_it(tmp_path):
  """A killed driver's stack finishing its last step: before, the rerun exited 0
  having run nothing (`0 done, 1 pending or running` in its summary)."""
  root = tmp_path / "sweep"
  name = _member(root)
  proc, lock, lines = _sweep_waiting(root, name, {"state": "running", "pid": 1})
  (root / "status" / f"{name}.json").write_text(json.dumps({"state": "interrupted"}))
  lock.close()  # the orphan stopped at a step
  out = "".join(lines) + proc.stdout.read()
  assert proc.wait(timeout=300) == 0, out
  assert json.loads((root / "status" / f"{name}.json").read_text())["state"] == "done"
