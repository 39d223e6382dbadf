"""What the command lines tell a new user: `--help`, `--config_help`, and a warning for
input the model cannot read (issue 17)."""

from pathlib import Path
import re
import subprocess
import sys

import pytest

from seq2seq_jax import config_utils

ROOT = Path(__file__).resolve().parent.parent


def _run(module, *args, input=""):
  return subprocess.run([sys.executable, "-m", f"seq2seq_jax.{module}", *args], cwd=ROOT,
                        input=input, capture_output=True, text=True, timeout=300)


def _source(module) -> str:
  """The CLI module's source (a package's `__main__.py`)."""
  path = ROOT / "seq2seq_jax" / module
  return (path / "__main__.py" if path.is_dir() else path.with_suffix(".py")).read_text()


def _defined_flags(module) -> set[str]:
  """The flags a module defines, read from its source (absl and ml_collections)."""
  return set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", _source(module)))


@pytest.mark.parametrize("module", ["main", "sweep", "translate", "average"])
def test_help_exits_0_and_names_every_flag(module):
  proc = _run(module, "--help")
  assert proc.returncode == 0, proc.stderr
  flags = _defined_flags(module) | {"verbose", "config_help"}
  assert len(flags) >= 4
  for name in flags:
    assert re.search(rf"--(\[no\])?{name}\b", proc.stdout), (name, proc.stdout)
  first = _source(module).split('"""')[1].splitlines()[0]
  assert proc.stdout.startswith(first)  # the module's docstring: what it does, how to call it
  for internal in ("worker", "members", "ghosts"):  # the driver's flags for its stacks
    assert f"--{internal}" not in proc.stdout, internal


def test_data_help_exits_0():
  proc = _run("data", "--help")
  assert proc.returncode == 0 and "stats" in proc.stdout and "--verbose" in proc.stdout


def _fields(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _fields(value, f"{prefix}{key}.")
    else:
      yield prefix + key, value


def test_config_help_documents_every_field_of_the_default_config():
  proc = _run("main", "--config_help")
  assert proc.returncode == 0, proc.stderr
  lines = {ln.split(" = ")[0]: ln for ln in proc.stdout.splitlines()}
  config = config_utils.load_module(ROOT / "configs" / "default.py").get_config()
  for name, value in _fields(config.to_dict()):
    assert lines[name].startswith(f"{name} = {value!r}  # "), lines.get(name)  # a comment each
  assert lines["model.cell"].endswith("rnn | lstm | gru | ln_lstm")
  # another config: its own values, the default's comments
  proc = _run("main", f"--config={ROOT / 'configs' / 'default.py'}:quick", "--config_help")
  assert "train.num_steps = 60  # training steps" in proc.stdout


def test_translate_warns_of_words_outside_the_vocabulary(quick_run):
  proc = _run("translate", f"--workdir={quick_run}", "--beam_size=1",
              input="seven\nSeven zebra\n")
  assert proc.returncode == 0, proc.stderr
  assert len(proc.stdout.splitlines()) == 2
  warnings = [ln for ln in proc.stderr.splitlines() if "not in the source vocabulary" in ln]
  assert warnings == ["stdin:2: not in the source vocabulary, translated as <unk>: Seven zebra"]


def test_a_run_ends_with_its_dev_and_test_metrics_and_the_report_path(quick_run, tmp_path):
  """The quick run resumed after its last checkpoint (stopped before it wrote
  finished.json): its last line, against metrics.jsonl."""
  import json
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(quick_run, workdir)
  (workdir / "finished.json").unlink()
  proc = _run("main", f"--config={ROOT / 'configs' / 'default.py'}:quick", f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr
  final = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if record["step"] == 60 and record["split"] in ("dev", "test"):
      final[record["split"]] = record
  assert proc.stderr.strip().splitlines()[-1].endswith(
      f"done at step 60: dev BLEU {final['dev']['bleu']:.2f} exact match "
      f"{final['dev']['exact_match']:.4f}; test BLEU {final['test']['bleu']:.2f} exact match "
      f"{final['test']['exact_match']:.4f}; report: {workdir / 'report.md'}")


def test_tokens_per_second_leaves_out_the_compiled_step():
  from seq2seq_jax.training import records
  stats = [dict(loss=1.0, token_accuracy=0.5, grad_norm=1.0, tf_ratio=1.0, learning_rate=1e-3,
                num_tokens=n) for n in (100.0, 30.0, 50.0)]
  assert records.train_record(stats, 3, 2.0)["tokens_per_s"] == 90.0
  assert records.train_record(stats, 3, 2.0, untimed_tokens=100.0)["tokens_per_s"] == 40.0
