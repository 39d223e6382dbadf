"""Test-wide settings (the models here are tiny, so compile time dominates) and
the quick run that several test files compare against."""

import gc
import io
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import tarfile

import pytest

# Less LLVM optimisation: about 40% less compile time for the tiny test models.
OPT_LEVEL_FLAG = "--xla_backend_optimization_level=0"
# XLA:CPU's older loop emitters instead of its fusion emitters: half the compile
# time again (a quick run's training step compiled in 1.1 s instead of 2.5 s, a
# copy-task combination of tests/test_train.py in 1.6 s instead of 2.8 s, on a
# 2-core Xeon; the suite 12.5 instead of 20 minutes). Both flags change only float
# rounding, and every test that compares runs bit for bit runs both sides under
# the same flags. Set before jax is imported; a user's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", f"{OPT_LEVEL_FLAG} --xla_cpu_use_fusion_emitters=false")

# One persistent compilation cache for the session's workers and the runs they
# start as subprocesses: many tests compile the same quick model (the runner's
# resume and rerun checks, each translate CLI call), and a program compiled
# once is read back instead. Keyed by the program, jax and the flags, so a
# changed program compiles anew.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402  (after the flags above)

# A shell's background job (`make test &`) starts with SIGINT ignored, and every
# process it starts inherits that: the Ctrl-C tests' runs would ignore theirs. A
# handler instead (exec resets it to the default in the runs the tests start).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

# Only for those subprocesses: the test workers compile and do not write the cache.
# (It was turned off when a worker crashed while writing it; the crash was most
# likely the memory-map limit below, and the cache was not turned back on.)
jax.config.update("jax_enable_compilation_cache", False)


def _read_map_limit() -> int:
  try:
    return int(Path("/proc/sys/vm/max_map_count").read_text())
  except (OSError, ValueError):
    return 65530  # Linux's default


MAP_LIMIT = _read_map_limit()  # the kernel's vm.max_map_count, read once


def _memory_maps() -> int:
  """How many memory maps this process holds (0 where /proc is not there)."""
  try:
    with open("/proc/self/maps") as f:
      return sum(1 for _ in f)
  except OSError:
    return 0


@pytest.fixture(autouse=True)
def _bounded_compiled_programs():
  """Frees jax's compiled programs once this worker holds many.

  Each program XLA compiles for the CPU maps its code and data into memory (about
  260-370 maps for a test of tests/test_train.py, measured), and jax keeps every
  program alive in its caches; a test worker compiles thousands. Past the kernel's
  vm.max_map_count (65530 by default) an mmap inside XLA fails: most likely the
  workers' segfaults (in compile or in writing the compile cache, 1 suite run in 3,
  which took their session fixtures with them). `jax.clear_caches()` unmaps them;
  it runs only when half the limit is used, so programs shared by neighbouring
  tests are mostly compiled once."""
  yield
  if _memory_maps() > MAP_LIMIT // 2:
    jax.clear_caches()
    gc.collect()


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


# The commit whose numbers today's code must reproduce byte for byte
# (tests/test_regression.py): the code before the one-loop refactor (issue 27).
# A change that means to change numbers says why in its commit and moves this
# to that commit.
BASELINE_COMMIT = "272c73a66c970fe7ba23edd3c7fdcb540fb57bab"


@pytest.fixture(scope="session")
def baseline_code(tmp_path_factory):
  """The package, configs and test configs of `BASELINE_COMMIT`, exported from this
  checkout's git history into a temporary directory (run from there, with it first
  on PYTHONPATH, they import the baseline's `seq2seq_jax`, not today's). Skips,
  saying why, where the history is not there (an export, a shallow clone)."""
  return export_commit(BASELINE_COMMIT, tmp_path_factory)


# The last commit that read every corpus into memory (issue 28 prepares it once).
IN_MEMORY_DATA_COMMIT = "c31992c77c657d66ec227f8e78291882ed2312b6"


@pytest.fixture(scope="session")
def in_memory_data_code(tmp_path_factory):
  """The code of `IN_MEMORY_DATA_COMMIT`, as `baseline_code` is that of its commit."""
  return export_commit(IN_MEMORY_DATA_COMMIT, tmp_path_factory)


def export_commit(commit: str, tmp_path_factory) -> Path:
  root = Path(__file__).resolve().parent.parent
  found = subprocess.run(["git", "-C", str(root), "cat-file", "-e", commit + "^{commit}"],
                         capture_output=True) if shutil.which("git") else None
  if found is None or found.returncode:
    pytest.skip(f"the commit {commit[:7]} is not in this checkout's git history (no git, an "
                "export or a shallow clone): there is no code to compare with")
  tree = extract_commit(commit, tmp_path_factory.mktemp(f"code_{commit[:7]}"))
  where = subprocess.run([sys.executable, "-c", "import seq2seq_jax; print(seq2seq_jax.__file__)"],
                         cwd=tree, env=code_env(tree), capture_output=True, text=True, check=True)
  assert Path(where.stdout.strip()).is_relative_to(tree), where.stdout
  return tree


def extract_commit(commit: str, tree: Path) -> Path:
  """The package, configs and test configs of `commit`, from git history, into `tree`."""
  root = Path(__file__).resolve().parent.parent
  archive = subprocess.run(["git", "-C", str(root), "archive", commit, "seq2seq_jax",
                            "configs", "tests/configs"], capture_output=True, check=True).stdout
  with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    tar.extractall(tree, filter="data")
  return tree


def code_env(tree: Path, xla_flags: str | None = None) -> dict:
  """The environment of a run of the package in `tree`: it first on PYTHONPATH, and
  XLA_FLAGS=`xla_flags` (none: the user's command, as a user runs it)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  env["PYTHONPATH"] = os.pathsep.join([str(tree)] + [p for p in [env.get("PYTHONPATH")] if p])
  return env
