"""Every reproduction's sweep expands and checks, and its quick form runs one member end to end;
the parity experiment's JoeyNMT export writes seq2seq_jax's own split and pieces."""

from pathlib import Path
import subprocess
import sys

import pytest
import yaml

from seq2seq_jax import data, sweep
from seq2seq_jax.config_utils import load_module

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/config.py"))
# members of each reproduction; every cell of its table has 3 seeds
EXPECTED = {"attention_by_length": 9, "attention_scores": 48, "cells": 9, "parity": 3,
            "scheduled_sampling": 25, "source_reversal": 6,
            "transformer_vs_lstm": 6}


def load(name):
  path = ROOT / "experiments" / name / "config.py"
  return path, load_module(path)


def test_all_reproductions_are_here():
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


# For the suite's time, the default run trains the quick member of one reproduction
# of each kind (a Debian-corpus RNN, the number-words task, the Transformer); the
# others, whose member 0 is one of the same recipes, are `slow`.
QUICK_BY_DEFAULT = ("attention_by_length", "scheduled_sampling", "transformer_vs_lstm")


@pytest.mark.parametrize("name", [n if n in QUICK_BY_DEFAULT else
                                  pytest.param(n, marks=pytest.mark.slow) for n in EXPERIMENTS])
def test_quick_member_runs(name, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "seq2seq_jax.sweep",
       f"--config={ROOT / 'experiments' / name / 'config.py'}:quick", f"--workdir={tmp_path}",
       "--index=0"], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  done = list((tmp_path / "members").glob("*/report.md"))
  assert len(done) == 1


def test_joeynmt_export_writes_our_split_pieces_and_model(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "parity" / "joeynmt_export.py"),
       f"--config={ROOT / 'experiments' / 'parity' / 'config.py'}:quick", f"--out={tmp_path}",
       "--seed=3"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  _, module = load("parity")
  config = module.get_config("quick")
  dataset = data.load(config.dataset)
  for split, pairs in dataset.texts.items():
    for side, index in (("src", 0), ("tgt", 1)):
      lines = (tmp_path / "data" / f"{split}.{side}").read_text(encoding="utf-8").splitlines()
      assert lines == [p[index] for p in pairs]
  # JoeyNMT puts its 4 specials first: the same 4 + pieces, so the same vocabulary size.
  pieces = (tmp_path / "data" / "vocab.tgt").read_text(encoding="utf-8").splitlines()
  assert len(pieces) == len(dataset.tgt_vocab) - 4
  assert pieces[0] == dataset.tgt_vocab.sp.id_to_piece(4)
  joey = yaml.safe_load((tmp_path / "seed3.yaml").read_text())
  assert joey["random_seed"] == 3
  assert joey["training"]["updates"] == config.train.num_steps
  assert joey["training"]["learning_rate"] == config.train.learning_rate
  assert joey["training"]["normalization"] == "batch"  # our loss_normalization="sentences"
  encoder, decoder = joey["model"]["encoder"], joey["model"]["decoder"]
  assert encoder["hidden_size"] * 2 == decoder["hidden_size"] == config.model.hidden_dim
  assert decoder["init_hidden"] == "last" and decoder["attention"] == "luong"
  assert decoder["input_feeding"] is config.model.input_feeding
