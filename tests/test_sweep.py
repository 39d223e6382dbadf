"""Sweeps: the specification, members in their own processes, failures, resume, the summary."""

import csv
import hashlib
import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time

import pytest

from seq2seq_jax import hyper
from seq2seq_jax.sweep import summary as sweep_summary

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "configs" / "sweep_quick.py"


def run_sweep(workdir, *flags, arg="faulty", wait=True, cwd=ROOT):
  cmd = [sys.executable, "-m", "seq2seq_jax.sweep", f"--config={CONFIG}:{arg}",
         f"--workdir={workdir}", *flags]
  if not wait:
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
  return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)


def test_product_zip_and_names():
  members = hyper.product([hyper.sweep("model.cell", ["rnn", "gru"]),
                           hyper.zipit([hyper.sweep("model.attention", ["none", "dot"]),
                                        hyper.sweep("model.input_feeding", [False, True])]),
                           hyper.sweep("seed", [0, 1])])
  assert len(members) == 8
  assert members[0] == {"model.cell": "rnn", "model.attention": "none",
                        "model.input_feeding": False, "seed": 0}
  assert members[3] == {"model.cell": "rnn", "model.attention": "dot",
                        "model.input_feeding": True, "seed": 1}
  names = hyper.member_names(members)
  assert names[5] == "cell=gru,attention=none,input_feeding=False,seed=1"
  assert hyper.member_names(members) == names  # deterministic
  assert hyper.member_names([{"model.k": 1, "train.teacher_forcing.k": 2}]) == [
      "model.k=1,train.teacher_forcing.k=2"]
  with pytest.raises(ValueError, match="one length"):
    hyper.zipit([hyper.sweep("a", [1, 2]), hyper.sweep("b", [1])])
  with pytest.raises(ValueError, match="twice"):
    hyper.product([hyper.sweep("a", [1]), hyper.sweep("a", [2])])
  with pytest.raises(ValueError, match="same overrides"):
    hyper.member_names([{"seed": 1}, {"seed": 1}])


def _snapshot(directory: Path) -> dict:
  return {str(p.relative_to(directory)): (p.stat().st_mtime_ns,
                                          hashlib.sha256(p.read_bytes()).hexdigest())
          for p in sorted(directory.rglob("*")) if p.is_file()}


def _status(root, name):
  return json.loads((root / "status" / f"{name}.json").read_text())


# Session scope and one xdist group: built once, on one worker, for every test
# that reads it (a module fixture is rebuilt whenever the worker runs another
# module between them).
@pytest.fixture(scope="session")
def faulty(tmp_path_factory):
  """The faulty sweep with --parallel 2; member 5 is killed after its step-10 checkpoint."""
  root = tmp_path_factory.mktemp("sweep")
  names = run_sweep(root, "--list").stdout.split("\n")
  name5 = names[5].split("\t")[2]
  proc = run_sweep(root, "--parallel=2", wait=False)
  status, checkpoint = root / "status" / f"{name5}.json", root / "members" / name5 / \
      "checkpoints" / "last" / "10"
  deadline = time.time() + 600
  while time.time() < deadline:
    if status.exists() and checkpoint.exists():
      os.kill(_status(root, name5)["pid"], signal.SIGKILL)
      break
    time.sleep(0.05)
  out, _ = proc.communicate(timeout=900)
  return root, proc.returncode, out, [n.split("\t")[2] for n in names if n]


def test_a_member_name_too_long_for_a_file_is_shortened_and_stays_unique(tmp_path):
  """Before: `OSError: File name too long` at the member's status file, and an empty
  sweep skeleton left behind."""
  long = "wörter" * 60  # 420 bytes in UTF-8
  members = [{"train.init_from": long + "a"}, {"train.init_from": long + "b"},
             {"train.init_from": "short"}]
  names = hyper.member_names(members)
  assert names[2] == "init_from=short"
  assert names[0] != names[1] and names[0].startswith("init_from=wörter")
  for name in names:
    assert len(name.encode()) <= 200
    for suffix in (".json", ".lock", ".log"):
      (tmp_path / f"{name}{suffix}").write_text("")  # a file system's 255 bytes
  assert hyper.member_names(members) == names  # deterministic


@pytest.mark.xdist_group("faulty_sweep")
def test_failures_are_reported_and_the_others_finish(faulty):
  root, returncode, out, names = faulty
  assert returncode == 1, out
  states = {n: _status(root, n)["state"] for n in names}
  assert states[names[1]] == "failed" and states[names[2]] == "failed"
  assert states[names[5]] == "interrupted"
  assert [n for n, s in states.items() if s == "done"] == [names[i] for i in (0, 3, 4, 6, 7)]
  summary = (root / "summary.md").read_text()
  failed = summary.split("## Failed")[1]
  assert ("FileNotFoundError: dataset.name=tsv:/nonexistent/corpus.tsv: the file "
          "/nonexistent/corpus.tsv does not exist") in failed
  assert re.search(r"FloatingPointError: training loss is (nan|inf) at step \d+", failed)
  assert "killed by SIGKILL" in failed
  for n in (names[0], names[3], names[4]):
    assert (root / "members" / n / "report.md").exists()


@pytest.mark.xdist_group("faulty_sweep")
def test_rerun_skips_finished_resumes_killed_and_retries_only_when_asked(faulty):
  root, _, _, names = faulty
  done = [names[i] for i in (0, 3, 4, 6, 7)]
  before = {n: _snapshot(root / "members" / n) for n in done}
  proc = run_sweep(root, "--parallel=2")
  assert proc.returncode == 1, proc.stdout + proc.stderr  # members 1 and 2 still failed
  assert _status(root, names[5])["state"] == "done"
  assert "resumed from" in (root / "logs" / f"{names[5]}.log").read_text()
  records = [json.loads(ln) for ln in
             (root / "members" / names[5] / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["split"] == "train"] == list(range(10, 301, 10))
  assert {n: _snapshot(root / "members" / n) for n in done} == before
  assert _status(root, names[1])["attempts"] == 1  # not retried
  proc = run_sweep(root, "--retry_failed")
  assert proc.returncode == 1
  assert _status(root, names[1])["attempts"] == 2 and _status(root, names[2])["attempts"] == 2
  assert {n: _snapshot(root / "members" / n) for n in done} == before


@pytest.mark.xdist_group("faulty_sweep")
def test_summary_mean_and_std_match_the_metrics_files(faulty):
  root, _, _, names = faulty
  finals, first_bucket = [], []
  for n in names[6:8]:  # cell=gru, attention=dot, seeds 0 and 1
    dev = [json.loads(ln) for ln in (root / "members" / n / "metrics.jsonl").read_text()
           .splitlines() if json.loads(ln)["split"] == "dev"]
    final = max(dev, key=lambda r: r["step"])
    finals.append(final["bleu"])
    first_bucket.append(final["bleu_by_length"][0]["bleu"])
  mean = (finals[0] + finals[1]) / 2
  std = (((finals[0] - mean) ** 2 + (finals[1] - mean) ** 2) / (2 - 1)) ** 0.5
  rows = {r["group"]: r for r in csv.DictReader(open(root / "groups.csv"))}
  row = rows["cell=gru,attention=dot"]
  assert int(row["n"]) == 2
  assert float(row["dev_bleu_mean"]) == pytest.approx(mean, abs=1e-9)
  assert float(row["dev_bleu_std"]) == pytest.approx(std, abs=1e-9)
  summary = (root / "summary.md").read_text()
  assert f"{mean:.2f} ± {std:.2f}" in summary
  length_row = next(ln for ln in summary.split("## Dev BLEU by source length")[1].splitlines()
                    if ln.startswith("| cell=gru,attention=dot |"))
  b_mean = sum(first_bucket) / 2
  b_std = abs(first_bucket[0] - first_bucket[1]) / 2 ** 0.5
  assert length_row.split(" | ")[1] == f"{b_mean:.2f} ± {b_std:.2f}"
  for plot in ("learning_curves", "bleu_by_length", "final_bleu"):
    assert (root / "plots" / f"{plot}.png").stat().st_size > 1000
  assert sweep_summary.mean_std([1.0])[2] == 1


def test_index_runs_exactly_one_member(tmp_path):
  """Also with a workdir relative to the working directory."""
  proc = run_sweep("rel", "--index=6", arg="", cwd=tmp_path)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  tmp_path = tmp_path / "rel"
  assert [p.name for p in (tmp_path / "members").iterdir()] == [
      "cell=gru,attention=dot,seed=0"]
  assert "Error" not in (tmp_path / "logs" / "cell=gru,attention=dot,seed=0.log").read_text()
  assert len(list((tmp_path / "members" / "cell=gru,attention=dot,seed=0" / "checkpoints" /
                   "last").iterdir())) == 3
  listing = run_sweep(tmp_path, "--list", arg="").stdout.splitlines()
  assert [ln.split("\t")[1] for ln in listing] == ["pending"] * 6 + ["done", "pending"]
  proc = run_sweep(tmp_path, "--index=8", arg="")
  assert proc.returncode == 2 and "the sweep has 8 members" in proc.stderr


def test_a_bad_member_field_stops_the_sweep_before_anything_runs(tmp_path):
  proc = run_sweep(tmp_path / "w", arg="badfield")
  assert proc.returncode == 2
  assert "member 0 (cell=lstm,attention=none,seed=0,cel=gru): cannot set model.cel" in \
      proc.stderr, proc.stderr
  assert not (tmp_path / "w" / "members").exists()
