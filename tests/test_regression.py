"""The refactor oracle: today's code computes byte for byte what the baseline's did.

Three quick runs (and, in `test_stack.py`, a 3-member stacked quick sweep) are
trained twice in this process's environment: by today's code and by the code of
`conftest.BASELINE_COMMIT`, exported from git history. Their `metrics.jsonl`
(timing fields out) and `predictions_{dev,test}.txt` must be equal byte for byte.
Both run on the same CPU, so this holds on any CPU model (a byte oracle recorded
on one machine did not: XLA:CPU rounds differently per model). A change that
means to change numbers says why in its commit and moves `BASELINE_COMMIT` to it.

The runs are the user's commands, each in a subprocess, both sides under
`--xla_backend_optimization_level=0` (less LLVM optimisation: a like-for-like
comparison at about half the compile time). Not under the tests' other flag, XLA:CPU's
loop emitters: there today's solo run, a stack of one, rounds differently from the
baseline's unstacked program (from the second logged step of a quick run), while
under the default emitters, which users run, the two programs agree bit for bit.
"""

import json
from pathlib import Path
import subprocess
import sys

from conftest import OPT_LEVEL_FLAG, code_env
import pytest

from seq2seq_jax.training.workdir import TIMING_FIELDS

ROOT = Path(__file__).resolve().parent.parent
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
FILES = ("metrics.jsonl", "predictions_dev.txt", "predictions_test.txt")
ADDED_METRICS = ("ter", "greedy_ter")  # reported since the baseline commit (issue 30)


def without_timing(metrics_jsonl: bytes, also=()) -> bytes:
  """A `metrics.jsonl` without the fields that differ between identical runs (and `also`)."""
  lines = [json.loads(line) for line in metrics_jsonl.decode().splitlines()]
  return "".join(json.dumps({k: v for k, v in r.items() if k not in TIMING_FIELDS + also})
                 + "\n" for r in lines).encode()


def run_files(tree: Path, args: list[str], workdir: Path, module: str = "seq2seq_jax.main",
              files=FILES, xla_flags: str = OPT_LEVEL_FLAG) -> dict[str, bytes]:
  """Runs `python -m module *args` with the package in `tree`; the `files` of `workdir`."""
  proc = subprocess.run([sys.executable, "-m", module, *args, f"--workdir={workdir}"],
                        cwd=tree, env=code_env(tree, xla_flags), capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, f"{tree}: {proc.stdout}{proc.stderr}"
  out = {f: (workdir / f).read_bytes() for f in files}
  return {f: without_timing(b, ADDED_METRICS) if f.endswith(".jsonl") else b
          for f, b in out.items()}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_quick_run_computes_what_the_baseline_computed(name, baseline_code, tmp_path):
  today = run_files(ROOT, QUICK + RUNS[name], tmp_path / "today")
  baseline = run_files(baseline_code, QUICK + RUNS[name], tmp_path / "baseline")
  for file in FILES:
    assert today[file] == baseline[file], (
        f"{name}/{file} differs from the baseline commit's: a change of numbers must say why "
        "in its commit and move conftest.BASELINE_COMMIT to it")
  if name == "as_is":  # translate's decoding too: sampled, several an input, by length;
    # each code reads the other's checkpoints (a field added to the train state once
    # made today's unreadable to the baseline's code, and the baseline's to today's)
    sources = today["predictions_test.txt"].decode()  # sentences of the task's tokens
    outputs = [subprocess.run(
        [sys.executable, "-m", "seq2seq_jax.translate", f"--workdir={tmp_path / workdir}",
         "--temperature=1.0", "--nbest=2", "--with_scores", "--batch_size=16"], cwd=tree,
        env=code_env(tree, OPT_LEVEL_FLAG), input=sources, capture_output=True,
        text=True, check=True).stdout
        for tree, workdir in ((ROOT, "today"), (baseline_code, "today"), (ROOT, "baseline"))]
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0].splitlines()) == 2 * len(sources.splitlines())
