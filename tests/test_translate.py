"""Beam search in the runner's evaluation, and the translate CLI on a trained quick run."""

import json
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu

from seq2seq_jax import data
from seq2seq_jax.config_utils import load_module

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "default.py"


def run(module, *flags, stdin=None, check=True):
  proc = subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, input=stdin,
                        capture_output=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr.decode()
  return proc


def quick_config():
  return load_module(CONFIG).get_config("quick")


# Session scope and one xdist group: trained once, on one worker, for its four tests.
@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  """The quick default run with beam 3 evaluation, greedy reported too."""
  workdir = tmp_path_factory.mktemp("beam_run")
  run("seq2seq_jax.main", f"--config={CONFIG}:quick", f"--workdir={workdir}",
      "--config.eval.beam_size=3", "--config.eval.report_greedy=True",
      "--config.train.num_steps=90", "--config.eval.every_steps=90")
  dev = data.load(quick_config().dataset).texts["dev"]
  return workdir, dev


def translate(workdir, *flags, lines=None, check=True):
  stdin = None if lines is None else "".join(x + "\n" for x in lines).encode()
  proc = run("seq2seq_jax.translate", f"--workdir={workdir}", "--checkpoint=90", *flags,
             stdin=stdin, check=check)
  return proc.stdout.decode().splitlines() if check else proc


def char_bleu(hyps, refs):
  return sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score


@pytest.mark.xdist_group("translate_trained")
def test_evaluation_reports_beam_and_greedy_as_the_cli_decodes(trained):
  workdir, dev = trained
  records = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
  final = [r for r in records if r["split"] == "dev" and r["step"] == 90][0]
  sources, refs = [s for s, _ in dev], [t for _, t in dev]
  predictions = (workdir / "predictions_dev.txt").read_text().splitlines()
  assert final["bleu"] == pytest.approx(char_bleu(predictions, refs), abs=1e-6)
  beam = translate(workdir, "--beam_size=3", "--length_penalty=0.6", lines=sources)
  assert beam == predictions
  greedy = translate(workdir, "--beam_size=1", lines=sources)
  assert final["greedy_bleu"] == pytest.approx(char_bleu(greedy, refs), abs=1e-6)
  assert final["greedy_exact_match"] == pytest.approx(
      np.mean([h == r for h, r in zip(greedy, refs)]))
  assert final["bleu"] > 20  # 90 steps are enough to be far from 0


@pytest.mark.xdist_group("translate_trained")
def test_nbest_scores_are_forced_log_probs(trained, tmp_path):
  """Without a length penalty, each n-best score is log p(output) computed
  again by `--score` (teacher-forced, another code path)."""
  workdir, dev = trained
  sources = [s for s, _ in dev[:12]]
  (tmp_path / "in.txt").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
  lines = translate(workdir, "--beam_size=4", "--nbest=3", "--with_scores",
                    "--length_penalty=0", f"--input={tmp_path / 'in.txt'}",
                    f"--attention_dir={tmp_path / 'att'}")
  assert len(lines) == 3 * len(sources)
  scores = np.array([float(ln.split("\t")[0]) for ln in lines]).reshape(len(sources), 3)
  assert np.all(np.diff(scores, axis=1) <= 0)
  texts = [ln.split("\t", 1)[1] for ln in lines]
  pairs = [f"{sources[i // 3]}\t{t}" for i, t in enumerate(texts)]
  forced = np.array([float(x) for x in translate(workdir, "--score", lines=pairs)])
  np.testing.assert_allclose(forced, scores.reshape(-1), atol=1e-4)
  assert len(list((tmp_path / "att").glob("*.png"))) == len(sources)


@pytest.mark.xdist_group("translate_trained")
def test_translate_errors_name_the_line(trained, tmp_path):
  workdir, _ = trained
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"one hundred\ntwo \xff\n")
  cases = [
      ((f"--input={bad}",), None, "bad.txt:2: not UTF-8"),
      (("--score",), b"one\tein\ntwo ohne tab\n", "stdin:2: --score needs source<TAB>target"),
      (("--beam_size=2", "--nbest=3"), b"one\n", "--nbest must be in [1, --beam_size=2]"),
      (("--temperature=0.5", "--nbest=0"), b"one\n", "--nbest must be in [1"),
      (("--checkpoint=7",), b"one\n", "no checkpoint of step 7"),
      (("--length_penalty=-1",), b"one\n", "--length_penalty must be a finite number >= 0"),
  ]
  for flags, stdin, message in cases:
    proc = run("seq2seq_jax.translate", f"--workdir={workdir}", *flags, stdin=stdin,
               check=False)
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and err[-1].startswith("error: ") and message in err[-1], err
  proc = run("seq2seq_jax.translate", f"--workdir={tmp_path / 'none'}", stdin=b"x\n",
             check=False)
  assert proc.returncode == 2 and b"must be a training workdir" in proc.stderr


@pytest.mark.xdist_group("translate_trained")
def test_a_workdir_from_before_the_parity_fix_keeps_its_decoder_state(trained, tmp_path):
  """Its config.json has no train.loss_normalization; its `last` handed the decoder the
  encoder's cell state too, so translate must score it as `last_state` does."""
  workdir, dev = trained
  pairs = [f"{src}\t{tgt}" for src, tgt in dev[:8]]

  def scores(config_edit):
    copy = tmp_path / config_edit.__name__
    shutil.copytree(workdir, copy)
    config = json.loads((copy / "config.json").read_text())
    config_edit(config)
    (copy / "config.json").write_text(json.dumps(config))
    return np.array([float(x) for x in translate(copy, "--score", lines=pairs)])

  def legacy(config):
    del config["train"]["loss_normalization"]

  def last_state(config):
    config["model"]["decoder_init"] = "last_state"

  def unchanged(config):
    pass

  assert json.loads((workdir / "config.json").read_text())["model"]["decoder_init"] == "last"
  legacy_scores = scores(legacy)
  np.testing.assert_array_equal(legacy_scores, scores(last_state))
  # The two initial states give other scores: the check above can fail.
  assert np.max(np.abs(legacy_scores - scores(unchanged))) > 1e-3
