"""Test-wide settings: the models here are tiny, so compile time dominates."""

import os

# Less LLVM optimisation: about 40% less compile time for the tiny test models.
# Set before jax is imported; a user's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
