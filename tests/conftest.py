"""Test-wide settings: the models here are tiny, so compile time dominates."""

import os

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
