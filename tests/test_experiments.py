"""Every reproduction's sweep expands and checks, and its quick form runs one member end to end."""

from pathlib import Path
import subprocess
import sys

import pytest

from seq2seq_jax import sweep
from seq2seq_jax.config_utils import load_module

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/config.py"))
# members of each reproduction; every cell of its table has 3 seeds
EXPECTED = {"attention_by_length": 6, "attention_scores": 24, "cells": 9,
            "scheduled_sampling": 15, "source_reversal": 6}


def load(name):
  path = ROOT / "experiments" / name / "config.py"
  return path, load_module(path)


def test_all_five_reproductions_are_here():
  assert EXPERIMENTS == sorted(EXPECTED)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_sweep_expands_with_three_seeds_per_cell(name, tmp_path):
  path, module = load(name)
  members = sweep.expand(module.get_config(), str(path), tmp_path)
  assert len(members) == EXPECTED[name]
  groups = {}
  for m in members:
    key = tuple(sorted((f, str(v)) for f, v in m.overrides.items() if f != "seed"))
    groups.setdefault(key, []).append(m.overrides["seed"])
  assert all(len(set(seeds)) >= 3 for seeds in groups.values())


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_member_runs(name, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "seq2seq_jax.sweep",
       f"--config={ROOT / 'experiments' / name / 'config.py'}:quick", f"--workdir={tmp_path}",
       "--index=0"], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  done = list((tmp_path / "members").glob("*/report.md"))
  assert len(done) == 1
