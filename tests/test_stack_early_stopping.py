"""Early stopping in a stack: a sweep of 3 members with patience trains as one
stack, and each member stops where its solo run stops, with its metrics and best/.

The members (`tests/configs/stack_quick.py:without_nan`, evaluated every 10 steps,
patience 1 on dev loss with min_delta 0.09) were measured to stop at steps 40
and 50 and to train the third to step 60; every dev-loss improvement is at least
0.01 away from min_delta, so the stacked kernels' rounding (about 1e-5 relative)
cannot move a stop. The two that stop have sampling schedules, which take the
per-token path alone as in the stack, and trained bit-identically to their solo
runs (measured); their best models are decoded alone, so their dev and test
metrics are equal. The third (gold only) takes the per-token path in the stack
and the gold path alone: its losses differ by up to 3.4e-6 relative and, decoded
in the stacked program, one of its 100 test outputs flipped at a near tie
("eiehnnderrii" vs "eiehnndeeri", test BLEU 14.50 vs 14.42): its losses are held
to 1e-5 and at most 2 of its outputs may differ.
"""

import json
from pathlib import Path
import re

import pytest
from test_stack import run_sweep

STOPPING = ["--config.eval.every_steps=10", "--config.train.early_stopping.patience=1",
            "--config.train.early_stopping.metric=loss",
            "--config.train.early_stopping.min_delta=0.09"]


def _member_dirs(root: Path) -> dict[str, Path]:
  return {d.name: d for d in sorted((root / "members").iterdir())}


@pytest.fixture(scope="session")
def stacked_and_solo(tmp_path_factory):
  """The sweep as one stack, and each member trained alone (`--index=K`, a solo
  run in a process of its own)."""
  base = tmp_path_factory.mktemp("stack_stopping")
  proc = run_sweep(base / "stacked", *STOPPING, arg="without_nan")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for k in range(3):
    proc = run_sweep(base / "solo", *STOPPING, f"--index={k}", arg="without_nan")
    assert proc.returncode == 0, proc.stdout + proc.stderr
  return base / "stacked", base / "solo"


def _files(d: Path) -> list[str]:
  """A workdir's files, orbax's data files and TensorBoard's events by pattern (unique names)."""
  names = (re.sub(r"/d/[0-9a-f]+$", "/d/*", str(p.relative_to(d)).split("/events.out")[0])
           for p in d.rglob("*") if p.is_file())
  return sorted(set(names))


@pytest.mark.xdist_group("stack_stopping")
def test_stacked_members_stop_where_their_solo_runs_stop(stacked_and_solo):
  stacked, solo = stacked_and_solo
  log = (stacked / "logs" / "stack-0.log").read_text()
  assert "training 3 members as one stack (3 slots) from step 0" in log
  ends = []
  for name, member in _member_dirs(stacked).items():
    alone = solo / "members" / name
    ours, theirs = (json.loads((d / "finished.json").read_text()) for d in (member, alone))
    ends.append((ours["step"], ours["model_step"]))
    for field in ("step", "model_step", "reason"):
      assert ours[field] == theirs[field], (name, field, ours[field], theirs[field])
    stopped = ours["model_step"] < 60
    for split in ("dev", "test"):
      assert ours[split]["loss"] == pytest.approx(theirs[split]["loss"], rel=1e-5), (name, split)
      if stopped:  # its best model decoded alone, as its solo run decodes it: equal outputs
        for key, value in theirs[split].items():
          assert ours[split][key] == pytest.approx(value, rel=1e-5, abs=1e-5), (name, key)
    outputs = [(d / "predictions_test.txt").read_text().splitlines() for d in (member, alone)]
    differing = sum(a != b for a, b in zip(*outputs))
    assert differing <= (0 if stopped else 2), (name, differing)
    best = [sorted(p.name for p in (d / "checkpoints" / "best").iterdir() if p.name.isdigit())
            for d in (member, alone)]
    assert best[0] == best[1] == [str(ours["model_step"])], (name, best)
    assert _files(member) == _files(alone), name
  # the measured stops (module docstring): two members early, one to num_steps
  assert sorted(ends) == [(40, 30), (50, 40), (60, 60)], ends


@pytest.mark.xdist_group("stack_stopping")
def test_a_finished_stack_does_nothing_when_run_again(stacked_and_solo):
  stacked, _ = stacked_and_solo
  before = {p: p.read_bytes() for p in stacked.rglob("*.jsonl")}
  proc = run_sweep(stacked, *STOPPING, arg="without_nan")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert {p: p.read_bytes() for p in stacked.rglob("*.jsonl")} == before
