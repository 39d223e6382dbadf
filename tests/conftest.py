"""Test-wide settings (the models here are tiny, so compile time dominates) and
the quick run that several test files compare against."""

import os
from pathlib import Path
import subprocess
import sys

import pytest

# Less LLVM optimisation: about 40% less compile time for the tiny test models.
# Set before jax is imported; a user's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

# One persistent compilation cache for the session's workers and the runs they
# start as subprocesses: many tests compile the same quick model (the runner's
# resume and rerun checks, each translate CLI call), and a program compiled
# once is read back instead. Keyed by the program, jax and the flags, so a
# changed program compiles anew.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
  """`configs/default.py:quick` trained once per test worker (60 steps, one CPU
  device): the uninterrupted reference of the runner, fault and device tests.
  Tests copy it; none changes it."""
  root = Path(__file__).resolve().parent.parent
  workdir = tmp_path_factory.mktemp("quick_run")
  proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.main",
                         f"--config={root / 'configs' / 'default.py'}:quick",
                         f"--workdir={workdir}"], cwd=root, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return workdir
