"""The runner end to end: workdir contents, exact resume after SIGKILL, determinism, errors."""

import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
import sacrebleu

from seq2seq_jax.data.vocab import tokenize
from seq2seq_jax.training.workdir import TIMING_FIELDS

ROOT = Path(__file__).resolve().parent.parent
QUICK = f"--config={ROOT / 'configs' / 'default.py'}:quick"


def run_main(workdir, *flags, check=True, wait=True):
  cmd = [sys.executable, "-m", "seq2seq_jax.main", QUICK, f"--workdir={workdir}", *flags]
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc


def metrics(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(ln).items() if k not in TIMING_FIELDS} for ln in lines]


def final_params(workdir, step=60):
  state = ocp.PyTreeCheckpointer().restore(Path(workdir) / "checkpoints" / "last" / str(step)
                                           / "state")
  return state["params"]


def assert_same_params(a, b):
  flat_a = sorted(_flatten(a).items())
  flat_b = sorted(_flatten(b).items())
  assert [k for k, _ in flat_a] == [k for k, _ in flat_b]
  for (key, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y, err_msg=key)


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}/"))
    else:
      out[prefix + k] = np.asarray(v)
  return out


@pytest.fixture(scope="module")
def uninterrupted(quick_run):
  return quick_run  # conftest.py: the quick config trained once per worker


def test_quick_run_leaves_a_complete_workdir(uninterrupted):
  w = uninterrupted
  config = json.loads((w / "config.json").read_text())
  assert config["model"]["cell"] == "lstm" and config["train"]["num_steps"] == 60
  env = json.loads((w / "environment.json").read_text())
  assert env["jax"] and "git_revision" in env
  records = [json.loads(ln) for ln in (w / "metrics.jsonl").read_text().splitlines()]
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == [10, 20, 30, 40, 50, 60]
  for r in records:
    if r["split"] == "train":
      assert {"loss", "ppl", "tf_ratio", "tokens_per_s", "token_accuracy"} <= set(r)
    else:
      assert {"loss", "ppl", "bleu", "chrf", "exact_match", "bleu_by_length"} <= set(r)
  assert [(r["step"], r["split"]) for r in records if r["split"] != "train"] == \
      [(30, "dev"), (60, "dev"), (60, "test")]
  losses = [r["loss"] for r in records if r["split"] == "train"]
  assert losses[-1] < losses[0]
  # The logged BLEU and exact match are those of the written predictions (sacrebleu again).
  hyps = (w / "predictions_dev.txt").read_text(encoding="utf-8").splitlines()
  final_dev = [r for r in records if r["split"] == "dev"][-1]
  from num2words import num2words  # the dev references, rebuilt independently

  from seq2seq_jax import config_schema, data
  german = {num2words(n, lang="en"): num2words(n, lang="de") for n in range(1000)}
  sources = [s for s, _ in data.load(config_schema.build(config).dataset).texts["dev"]]
  refs = [german[s] for s in sources]
  assert len(hyps) == 100
  np.testing.assert_allclose(final_dev["bleu"],
                             sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score)
  np.testing.assert_allclose(final_dev["exact_match"], np.mean([h == r for h, r in
                                                                zip(hyps, refs)]))
  np.testing.assert_allclose(final_dev["ter"], sacrebleu.corpus_ter(hyps, [refs]).score)
  by_length = final_dev["exact_match_by_length"]  # by source words, one row a length
  words = [len(tokenize(s, "word")) for s in sources]
  assert [row["n"] for row in by_length] == [words.count(n) for n in sorted(set(words))]
  for row in by_length:
    same = [h == r for h, r, n in zip(hyps, refs, words) if str(n) == row["bucket"]]
    np.testing.assert_allclose(row["exact_match"], np.mean(same), atol=5e-5)
  assert list((w / "tensorboard").glob("events.out.tfevents.*"))
  # every 20 steps and at each evaluation (30, 60), the last 3 kept
  assert sorted(p.name for p in (w / "checkpoints" / "last").iterdir()) == ["30", "40", "60"]
  assert len(list((w / "checkpoints" / "best").iterdir())) == 1
  pngs = sorted((w / "attention").glob("*.png"))
  assert [p.name for p in pngs] == ["0000030_0.png", "final_dev_0.png", "final_test_0.png"]
  assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
  report = (w / "report.md").read_text()
  assert f"| dev | {final_dev['loss']:.4f} |" in report
  assert "attention/final_dev_0.png" in report and "BLEU by source length" in report


def test_same_config_and_seed_give_identical_metrics(uninterrupted, tmp_path):
  run_main(tmp_path)
  assert metrics(tmp_path) == metrics(uninterrupted)
  assert_same_params(final_params(tmp_path), final_params(uninterrupted))


def test_killed_run_resumes_exactly(uninterrupted, tmp_path):
  proc = run_main(tmp_path, wait=False)
  marker = tmp_path / "checkpoints" / "last" / "20" / "commit_success.txt"
  deadline = time.time() + 300
  while not marker.exists():
    assert proc.poll() is None, proc.stdout.read().decode()
    assert time.time() < deadline
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)  # a killed process, not a clean exit
  proc.wait()
  assert not (tmp_path / "report.md").exists()
  resumed = run_main(tmp_path)
  assert "resumed from" in resumed.stdout + resumed.stderr
  assert metrics(tmp_path) == metrics(uninterrupted)
  assert_same_params(final_params(tmp_path), final_params(uninterrupted))


# An unreadable newest checkpoint: tests/test_faults.py (moved aside, resumed from the one before).


@pytest.mark.parametrize("flag,message", [
    ("--config.model.cel=gru", r'cel.*Did you mean "cell"'),
    ("--config.model.cell=lstmm", r"model.cell='lstmm' is not valid; valid cells: rnn, lstm, gru"),
    ("--config.train.num_steps=abc", r"config.train.num_steps=abc"),
    ("--config.model.attention=bahdanau", r"valid choices: none, dot, general, concat"),
    ("--config.train.teacher_forcing.schedule=sigmoid", r"valid schedules: constant, linear"),
    ("--config.dataset.name=wmt", r"dataset.name='wmt' is not valid; valid datasets: num2words"),
    ("--config.train.batch_size=0", r"train.batch_size must be a positive int, got 0"),
    ("--config.train.loss_normalization=batch",
     r"train.loss_normalization='batch' is not valid; valid choices: sentences, tokens"),
    ("--config.model.family=transformerr", r"model.family='transformerr' is not valid; valid "
     r"families: rnn"),
    ("--config.eval.length_penalty=-1.0", r"eval.length_penalty must be a finite number >= 0"),
    ("--config.train.lr_schedule=noam", r"train.lr_schedule='noam' is not valid; valid "
     r"schedules: constant, rsqrt, cosine, halving"),
    ("--config.eval.length_penalty_type=wu", r"eval.length_penalty_type='wu' is not valid"),
])
def test_config_errors_are_one_line_before_training(tmp_path, flag, message):

  proc = run_main(tmp_path / "w", flag, check=False)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert re.search(message, lines[0]), lines[0]
  assert not (tmp_path / "w").exists()  # nothing started


def test_rerunning_a_finished_run_changes_no_metrics(uninterrupted, tmp_path):
  import shutil
  shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
  run_main(tmp_path)
  assert metrics(tmp_path) == metrics(uninterrupted)


def test_workdir_with_another_config_is_refused(uninterrupted, tmp_path):
  import shutil
  shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
  proc = run_main(tmp_path, "--config.model.cell=gru", "--config.train.num_steps=70",
                  check=False)
  assert proc.returncode == 2
  assert "model.cell: 'lstm' -> 'gru'" in proc.stderr
  assert "train.num_steps: 60 -> 70" in proc.stderr
  assert "--config_mismatch=allow" in proc.stderr


def test_a_workdir_from_before_the_parity_fix_is_compared_in_todays_meanings(uninterrupted,
                                                                             tmp_path):
  """Its config.json has no train.loss_normalization and its `last` meant `last_state`:
  resuming it with today's defaults names both changes."""
  import json
  import shutil
  shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["train"]["loss_normalization"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  proc = run_main(tmp_path, check=False)
  assert proc.returncode == 2
  assert "model.decoder_init: 'last_state' -> 'last'" in proc.stderr
  assert "train.loss_normalization: '<absent>' -> 'sentences'" in proc.stderr


def test_nan_loss_stops_with_a_clear_error(tmp_path):
  proc = run_main(tmp_path, "--config.train.optimizer=sgd", "--config.train.learning_rate=1e38",
                  "--config.train.clip_norm=0.0",
                  check=False)
  assert proc.returncode == 2
  assert re.search(r"training loss is (nan|inf) at step \d+", proc.stderr), proc.stderr


def test_deen_attention_quick_runs_end_to_end(tmp_path):
  """configs/deen_attention.py:quick on debian:de-en (prepared from Debian packages)."""
  proc = subprocess.run(
      [sys.executable, "-m", "seq2seq_jax.main",
       f"--config={ROOT / 'configs' / 'deen_attention.py'}:quick", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  records = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["split"]) for r in records] == [(10, "train"), (20, "train"),
                                                         (20, "dev"), (20, "test")]
  assert json.loads((tmp_path / "vocab_src.json").read_text())["kind"] == "sentencepiece"
