"""Early stopping (`train.early_stopping.*`) and a finished run's rerun doing nothing.

The stopping step is checked against the rule written out by hand: with a
`min_delta` no change can beat, the first evaluation is the best and the run
stops `patience` evaluations later.
"""

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from seq2seq_jax import config_schema
from seq2seq_jax.training import early_stopping
from seq2seq_jax.training.workdir import TIMING_FIELDS

ROOT = Path(__file__).resolve().parent.parent
EVERY, PATIENCE = 10, 2
FLAGS = [f"--config={ROOT / 'configs' / 'default.py'}:quick", "--config.train.num_steps=200",
         f"--config.eval.every_steps={EVERY}", "--config.train.checkpoint_every_steps=10",
         f"--config.train.early_stopping.patience={PATIENCE}",
         "--config.train.early_stopping.metric=loss",
         "--config.train.early_stopping.min_delta=1000.0"]
STOP = EVERY * (1 + PATIENCE)  # best at the first evaluation, then PATIENCE without a gain
BEST = EVERY  # the model evaluated at the end: the best one


def _train(workdir, *extra, env=None):
  return subprocess.run([sys.executable, "-m", "seq2seq_jax.main", *FLAGS, *extra,
                         f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env=env)


def _metrics(workdir):
  return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS}
          for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _train_config(**fields):
  return config_schema.Train(early_stopping=config_schema.EarlyStopping(**fields))


@pytest.mark.parametrize("metric,values,min_delta,stop_at", [
    # higher is better: best 3 at the second, then two without a gain -> stops at the 4th
    ("bleu", [1.0, 3.0, 2.0, 3.0, 5.0], 0.0, 4),
    ("bleu", [1.0, 1.4, 1.3, 2.0], 0.5, 3),  # gains over the best of < min_delta do not count
    ("loss", [5.0, 4.0, 4.5, 3.0, 3.1, 3.2], 0.0, 6),  # lower is better
    ("exact_match", [1.0, 1.0, 1.0], 0.0, 3),  # a plateau at the top stops it
    ("chrf", [1.0, 2.0, 3.0, 4.0], 0.0, None),  # always improving: never stops
])
def test_the_rule_written_out(metric, values, min_delta, stop_at):
  stopper = early_stopping.EarlyStopping(_train_config(patience=2, metric=metric,
                                                       min_delta=min_delta))
  stops = [n for n, v in enumerate(values, 1) if stopper.update(n, {metric: v})]
  assert (stops[0] if stops else None) == stop_at


def test_patience_0_never_stops_and_a_resumed_count_continues():
  off = early_stopping.EarlyStopping(_train_config(patience=0))
  assert not any(off.update(n, {"bleu": 1.0}) for n in range(10))
  records = [{"step": s, "split": split, "bleu": b} for s, b in ((10, 2.0), (20, 1.0))
             for split in ("train", "dev")]
  resumed = early_stopping.EarlyStopping(_train_config(patience=2), records)
  assert (resumed.best_step, resumed.since_best) == (10, 1)
  assert resumed.update(30, {"bleu": 1.5})  # the second evaluation without a gain


@pytest.mark.parametrize("field,value", [("patience", -1), ("metric", "accuracy"),
                                         ("min_delta", -0.1)])
def test_bad_fields_are_named(field, value):
  with pytest.raises(ValueError, match=f"train.early_stopping.{field}"):
    early_stopping.check(_train_config(**{field: value}))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("early") / "run"
  proc = _train(workdir)
  assert proc.returncode == 0, proc.stderr
  return workdir, proc


def test_a_run_stops_at_the_right_step_and_a_rerun_does_nothing(stopped_run):
  workdir, proc = stopped_run
  records = _metrics(workdir)
  assert max(r["step"] for r in records) == STOP
  assert [r["step"] for r in records if r["split"] == "dev"] == list(range(EVERY, STOP + 1,
                                                                          EVERY))
  assert [r["step"] for r in records if r["split"] == "test"] == [BEST]
  finished = json.loads((workdir / "finished.json").read_text())
  assert (finished["step"], finished["model_step"]) == (STOP, BEST)
  assert finished["reason"].startswith("stopped early")
  # the final evaluation is of the best model: its dev metrics are those recorded at BEST
  dev_at_best = next(r for r in records if r["split"] == "dev" and r["step"] == BEST)
  assert finished["dev"]["loss"] == dev_at_best["loss"]
  assert finished["dev"]["loss"] != records[-2]["loss"]  # not the model of the stop
  assert sorted(p.name for p in (workdir / "checkpoints" / "best").iterdir()) == [str(BEST)]
  report = (workdir / "report.md").read_text()
  assert f"Step {BEST} of 200 (stopped early" in report
  assert f"stopped at step {STOP}, evaluating the model of step {BEST}" in report
  assert f"done at step {STOP}:" in proc.stderr
  assert (workdir / "attention" / "final_dev_0.png").exists()
  before = {p.name: p.read_bytes() for p in (workdir,) for p in p.iterdir() if p.is_file()}
  again = _train(workdir)
  assert again.returncode == 0, again.stderr
  assert f"finished at step {STOP}" in again.stderr and "nothing to do" in again.stderr
  assert "compiling" not in again.stderr  # nothing loaded, nothing trained
  assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before


def test_killed_at_the_stopping_step_it_resumes_to_the_same_stop(stopped_run, tmp_path):
  reference, _ = stopped_run
  workdir = tmp_path / "killed"
  env = {**os.environ, "SEQ2SEQ_JAX_KILL_AT": "test_record"}  # its checkpoints complete
  assert _train(workdir, env=env).returncode != 0
  assert not (workdir / "finished.json").exists()
  proc = _train(workdir)
  assert proc.returncode == 0, proc.stderr
  assert f"resumed from {workdir / 'checkpoints'} at step {STOP}" in proc.stderr
  assert _metrics(workdir) == _metrics(reference)


@pytest.mark.slow  # suite time; the same check as the runner's config-mismatch tests
def test_a_changed_config_trains_on(stopped_run, tmp_path):
  workdir = tmp_path / "longer"
  shutil.copytree(stopped_run[0], workdir)
  proc = _train(workdir, "--config.train.early_stopping.patience=0",
                "--config.train.num_steps=40", "--config_mismatch=allow")
  assert proc.returncode == 0, proc.stderr
  assert max(r["step"] for r in _metrics(workdir)) == 40
  assert json.loads((workdir / "finished.json").read_text())["reason"] == "num_steps"
