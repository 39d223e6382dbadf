"""Warm start (`train.init_from`): the other run's parameters, read back by orbax
alone, its vocabularies, a fresh optimizer and step; mismatches refused in one line."""

import json
from pathlib import Path
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from seq2seq_jax import models
from seq2seq_jax.data.vocab import load_vocab
from seq2seq_jax.training import early_stopping, optim, step, warm_start

ROOT = Path(__file__).resolve().parent.parent
QUICK = f"--config={ROOT / 'configs' / 'default.py'}:quick"


def _main(workdir, *flags):
  return subprocess.run([sys.executable, "-m", "seq2seq_jax.main", QUICK, *flags,
                         f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)


def _records(workdir, split):
  return [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
          if r["split"] == split]


def test_the_state_gets_the_checkpoints_params_and_a_fresh_optimizer(quick_run):
  config = ml_collections.ConfigDict(json.loads((quick_run / "config.json").read_text()))
  model = models.build(config.model, len(load_vocab(quick_run / "vocab_src.json")),
                       len(load_vocab(quick_run / "vocab_tgt.json")))
  tx = optim.optimizer_from_config(config.train)
  batch = {"src": np.ones((2, 3), np.int32), "tgt": np.ones((2, 3), np.int32)}
  fresh = step.init_state(model, tx, jax.random.PRNGKey(7), batch)
  state = warm_start.WarmStart(f"{quick_run}:last").into(fresh, tx)
  saved = ocp.StandardCheckpointer().restore(quick_run / "checkpoints" / "last" / "60" /
                                             "state")
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(saved["params"])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert int(state.step) == 0
  adam = next(s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: isinstance(
      s, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState))
  assert int(adam.count) == 0 and all(not np.any(m) for m in jax.tree.leaves(adam.mu))
  assert warm_start.parse(f"{quick_run}:1200") == (quick_run, "1200")
  assert warm_start.parse(str(quick_run)) == (quick_run, "best")


def test_a_warm_started_run_starts_where_the_other_ended(quick_run, tmp_path):
  child = tmp_path / "child"
  proc = _main(child, f"--config.train.init_from={quick_run}:last",
               "--config.train.num_steps=20", "--config.eval.every_steps=10")
  assert proc.returncode == 0, proc.stderr
  assert "warm start from" in proc.stderr
  for name in warm_start.VOCABULARIES:
    assert (child / name).read_bytes() == (quick_run / name).read_bytes()
  assert [r["step"] for r in _records(child, "dev")] == [10, 20]  # its own step count
  assert [r["step"] for r in _records(child, "train")][0] == 10
  # 60 steps of the other run, then 10: below the other run's dev loss after 30 of its
  # own (a model from scratch is far above that at step 10: the first train loss says)
  parent = {r["step"]: r["loss"] for r in _records(quick_run, "dev")}
  child_dev = _records(child, "dev")[0]["loss"]
  assert child_dev < parent[30] and abs(child_dev - parent[60]) < 0.5 * (parent[30] - parent[60])
  assert _records(child, "train")[0]["loss"] < _records(quick_run, "train")[0]["loss"] - 0.5
  assert json.loads((child / early_stopping.FINISHED).read_text())["step"] == 20


def _one_error_line(proc, *parts):
  assert proc.returncode == 2, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: train.init_from=") and "Traceback" not in proc.stderr, proc.stderr
  for part in parts:
    assert part in last, last


def test_mismatches_are_refused_in_one_line(quick_run, tmp_path):
  other = tmp_path / "other_vocab"
  other.mkdir()
  shutil.copy(quick_run / "vocab_tgt.json", other / "vocab_tgt.json")
  vocab = json.loads((quick_run / "vocab_src.json").read_text())
  vocab["tokens"] = vocab["tokens"][:-1]
  (other / "vocab_src.json").write_text(json.dumps(vocab))
  _one_error_line(_main(other, f"--config.train.init_from={quick_run}"), "vocab_src.json differs")
  _one_error_line(_main(tmp_path / "wider", f"--config.train.init_from={quick_run}",
                        "--config.model.hidden_dim=48"), "parameter", "model config must match")
  assert not (tmp_path / "wider" / "config.json").exists()  # the corrected command runs
