"""Checkpoint averaging: `python -m seq2seq_jax.average` against the numpy mean of
the checkpoints' parameters, read back with orbax alone."""

import json
from pathlib import Path
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

ROOT = Path(__file__).resolve().parent.parent


def _run(module, *args, input=""):
  return subprocess.run([sys.executable, "-m", f"seq2seq_jax.{module}", *args], cwd=ROOT,
                        input=input, capture_output=True, text=True, timeout=300)


def _params(path: Path) -> dict:
  return ocp.StandardCheckpointer().restore(path / "state")["params"]


def test_the_average_is_the_mean_of_the_last_checkpoints_and_translate_loads_it(quick_run,
                                                                                 tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(quick_run, workdir)
  last = workdir / "checkpoints" / "last"
  steps = sorted(int(p.name) for p in last.iterdir())[-3:]  # quick: keeps 30, 40, 60
  proc = _run("average", f"--workdir={workdir}", "--last=3")
  assert proc.returncode == 0, proc.stderr
  saved = workdir / "checkpoints" / "average" / str(steps[-1])
  mean = jax.tree.map(lambda *xs: np.mean(np.stack([np.asarray(x, np.float64) for x in xs]), 0),
                      *[_params(last / str(s)) for s in steps])
  got = _params(saved)
  assert jax.tree.structure(got) == jax.tree.structure(mean)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(mean)):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-6, atol=1e-7)
  assert json.loads((saved / "meta" / "metadata").read_text())["averaged_steps"] == steps
  report = (workdir / "report.md").read_text()
  assert f"## Average of the last 3 checkpoints (steps {', '.join(map(str, steps))})" in report
  assert "| dev |" in report.split("## Average")[1]
  out = _run("translate", f"--workdir={workdir}", "--checkpoint=average", input="seven\n")
  assert out.returncode == 0 and len(out.stdout.splitlines()) == 1, out.stderr
  # again, by default (5, or all 3 kept; before: `--last=5` refused after loading the model):
  # one average and one report section, replaced
  again = _run("average", f"--workdir={workdir}")
  assert again.returncode == 0 and f"average of steps {steps}:" in again.stdout, again.stderr
  assert [p.name for p in (workdir / "checkpoints" / "average").iterdir()] == [str(steps[-1])]
  assert (workdir / "report.md").read_text().count("## Average of the last") == 1
  proc = _run("average", f"--workdir={workdir}", "--last=9")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
      f"error: --last=9: {last} holds 3 checkpoints"), proc.stderr
