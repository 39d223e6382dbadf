"""The Transformer family end to end: the runner, evaluation (with the grid of
heads), and the translate CLI, on the number-words task and on debian:de-en."""

import json
from pathlib import Path
import subprocess
import sys

from num2words import num2words
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "deen_transformer.py"
# configs/deen_transformer.py:quick on the number-words task (word sources,
# character targets: up to 5 characters a word), 400 steps, on the split its
# thresholds were measured on (every number once, by hash).
NUMBER_WORDS = ["--config.dataset.name=num2words_en_de", "--config.dataset.tokenizer=",
                "--config.dataset.number_split=hash",
                "--config.dataset.bucket_boundaries=()", "--config.eval.max_len_a=5.0",
                "--config.eval.max_examples=0", "--config.train.num_steps=400",
                "--config.train.log_every_steps=50", "--config.eval.every_steps=200",
                "--config.train.checkpoint_every_steps=200"]


def run(module, *flags, stdin=None):
  proc = subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, input=stdin,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc.stdout


def records(workdir):
  return [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]


# Session scope and one xdist group: trained once, on one worker, for both tests.
@pytest.fixture(scope="session")
def number_words(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("transformer_number_words")
  run("seq2seq_jax.main", f"--config={CONFIG}:quick", f"--workdir={workdir}", *NUMBER_WORDS)
  return workdir


# slow (suite time, issue 17's new tests): a 400-step Transformer run, about 80 s
@pytest.mark.slow
@pytest.mark.xdist_group("transformer_number_words")
def test_quick_transformer_learns_number_words(number_words):
  final = {r["split"]: r for r in records(number_words) if r["step"] == 400 and "bleu" in r}
  assert final["dev"]["exact_match"] >= 0.95
  assert final["test"]["exact_match"] >= 0.95
  config = json.loads((number_words / "config.json").read_text())
  assert config["model"]["family"] == "transformer"
  assert (number_words / "attention" / "final_dev_heads.png").stat().st_size > 0
  assert "transformer d64 h4 2+2 layers, pre-norm" in (number_words / "report.md").read_text()


@pytest.mark.slow  # the same run as the test above
@pytest.mark.xdist_group("transformer_number_words")
def test_translate_cli_serves_the_transformer(number_words):
  """Greedy, beam and scoring through the unchanged CLI; the German reference is
  num2words' own spelling."""
  numbers = [7, 42, 118, 342, 999]
  sources = "".join(num2words(n) + "\n" for n in numbers)
  expected = [num2words(n, lang="de") for n in numbers]
  greedy = run("seq2seq_jax.translate", f"--workdir={number_words}", "--beam_size=1",
               stdin=sources).splitlines()
  beam = run("seq2seq_jax.translate", f"--workdir={number_words}", "--beam_size=4",
             "--nbest=2", "--with_scores", stdin=sources).splitlines()
  assert sum(g == e for g, e in zip(greedy, expected)) >= 4, (greedy, expected)
  assert len(beam) == 2 * len(numbers)
  best = [line.split("\t") for line in beam[::2]]
  assert sum(text == e for (_, text), e in zip(best, expected)) >= 4, (best, expected)
  scored = run("seq2seq_jax.translate", f"--workdir={number_words}", "--score",
               stdin="".join(f"{num2words(n)}\t{e}\n" for n, e in zip(numbers, expected)))
  assert all(float(x) <= 0.0 for x in scored.split())


@pytest.mark.slow  # suite time; transformer_vs_lstm's quick member trains it on Debian text
def test_deen_transformer_quick_runs_end_to_end(tmp_path):
  """configs/deen_transformer.py:quick on debian:de-en (prepared from Debian packages)."""
  run("seq2seq_jax.main", f"--config={CONFIG}:quick", f"--workdir={tmp_path}")
  assert [(r["step"], r["split"]) for r in records(tmp_path)] == [
      (10, "train"), (20, "train"), (20, "dev"), (20, "test")]
  train = records(tmp_path)[1]
  assert 0 < train["learning_rate"] < 2e-3  # rsqrt warmup: 20 of 100 steps
  assert json.loads((tmp_path / "vocab_src.json").read_text())["kind"] == "sentencepiece"
