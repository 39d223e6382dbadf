"""The refactor oracle: three quick runs give byte-identical metrics and predictions.

Recorded from the code before the model-interface refactor (commit 501ec6e, after
the learning-parity fix) on the 2-core AMD EPYC (Zen 5) CI machine, jax 0.10:
`tests/oracle/NAME/` holds each run's `metrics.jsonl` without its timing fields
and its `predictions_{dev,test}.txt`. Every later change is held to them; numbers
may change only in a commit that says why and re-records them with

    python tests/test_regression.py --record

The runs are the user's commands, in a subprocess without the tests' XLA_FLAGS.
"""

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from seq2seq_jax.training.workdir import TIMING_FIELDS

ROOT = Path(__file__).resolve().parent.parent
ORACLE = Path(__file__).resolve().parent / "oracle"
QUICK = ["--config=configs/default.py:quick", "--config.dataset.name=reverse"]
RUNS = {
    "as_is": [],
    "gru_additive": ["--config.model.cell=gru", "--config.model.attention=additive",
                     "--config.model.input_feeding=True",
                     "--config.train.teacher_forcing.schedule=linear",
                     "--config.train.teacher_forcing.k=1.0",
                     "--config.train.teacher_forcing.c=0.01"],
    "ln_lstm_general": ["--config.model.cell=ln_lstm", "--config.model.attention=general",
                        "--config.model.bidirectional=True", "--config.model.num_layers=2"],
}
# Metrics added after the oracle was recorded: new keys, not changed numbers (their
# own tests check them); the records' other keys must stay byte-identical.
ADDED_KEYS = ("exact_match_by_length",)
FILES = ("metrics.jsonl", "predictions_dev.txt", "predictions_test.txt")


def run(name: str, workdir: Path) -> dict[str, bytes]:
  """Trains run `name` in `workdir`; its files as the oracle stores them."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  subprocess.run([sys.executable, "-m", "seq2seq_jax.main", *QUICK, *RUNS[name],
                  f"--workdir={workdir}"], cwd=ROOT, env=env, check=True,
                 capture_output=True)
  files = {f: (workdir / f).read_bytes() for f in FILES}
  lines = [json.loads(line) for line in files["metrics.jsonl"].decode().splitlines()]
  files["metrics.jsonl"] = "".join(
      json.dumps({k: v for k, v in r.items() if k not in TIMING_FIELDS + ADDED_KEYS}) + "\n"
      for r in lines).encode()
  return files


@pytest.mark.parametrize("name", sorted(RUNS))
def test_quick_run_matches_the_recorded_oracle(name, tmp_path):
  files = run(name, tmp_path / name)
  for file, content in files.items():
    expected = (ORACLE / name / file).read_bytes()
    assert content == expected, (
        f"{name}/{file} differs from tests/oracle/{name}/{file}: a change of numbers must "
        "say why in its commit and re-record (python tests/test_regression.py --record)")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
  for run_name in RUNS:
    tmp = ORACLE / f".{run_name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for file, content in run(run_name, tmp / "workdir").items():
      (ORACLE / run_name).mkdir(parents=True, exist_ok=True)
      (ORACLE / run_name / file).write_bytes(content)
    shutil.rmtree(tmp)
    print(f"recorded tests/oracle/{run_name}")
