"""Two processes on one workdir (issue 32, item 1): the second is refused before it
writes anything, and a dead holder's lock is no lock."""

import os
from pathlib import Path
import signal
import subprocess
import sys

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

