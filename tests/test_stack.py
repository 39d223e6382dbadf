"""Stacked sweep members: the vmapped step against solo steps, and stacked sweeps
(deterministic, resumable after kill -9, a NaN member frozen without touching the others)."""

import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from test_regression import ADDED_METRICS, run_files, without_timing
from test_schedules import FORMULAS  # each schedule written out (Bengio et al. 2015, 2.4)

from seq2seq_jax import config_utils, data, models
from seq2seq_jax.training import losses, optim, schedules, stack, step
from seq2seq_jax.training.workdir import TIMING_FIELDS

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "configs" / "stack_quick.py"

def test_one_traced_function_gives_every_schedule_per_member():
  assert set(FORMULAS) == set(schedules.SCHEDULES)
  names = sorted(FORMULAS)
  params = stack.stack_trees([schedules.member_parameters({"schedule": n, **FORMULAS[n][0]})
                              for n in names])
  traced = jax.jit(jax.vmap(schedules.traced_schedule, in_axes=(None, 0)))
  for i in (0, 1, 10, 500, 1234, 10_000, 50_000):
    expected = [FORMULAS[n][1](i) for n in names]
    np.testing.assert_allclose(traced(jnp.int32(i), params), expected, rtol=1e-5, atol=1e-7)


def test_traced_label_smoothing_matches_the_formula_and_its_gradient():
  rng = np.random.default_rng(0)
  h, w = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
  b, targets = rng.normal(size=7).astype(np.float32), rng.integers(0, 7, 6)

  def formula(h, w, b, eps):  # (1 - eps) * nll + eps * mean over the vocabulary of -log p
    log_p = jax.nn.log_softmax(h @ w + b)
    nll = -jnp.take_along_axis(log_p, targets[:, None], 1)[:, 0]
    return jnp.sum((1 - eps) * nll - eps * jnp.mean(log_p, -1))

  def fused(h, w, b, eps):
    return jnp.sum(losses.projected_cross_entropy(h, w, b, jnp.asarray(targets), eps)[0])

  for eps in (0.0, 0.1, 0.3):
    traced = jax.jit(jax.value_and_grad(fused, argnums=(0, 1, 2)))
    value, grads = traced(h, w, b, jnp.float32(eps))
    ref_value, ref_grads = jax.value_and_grad(formula, argnums=(0, 1, 2))(h, w, b, eps)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def _member(base, **fields):
  config = ml_collections.ConfigDict(base.to_dict())
  for dotted, value in fields.items():
    node, parts = config, dotted.split("__")
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = value
  return config


def _solo_losses(model, dataset, config, steps):
  """What `run.train_and_evaluate` computes: its optimizer, schedule and step, jitted alone."""
  tc = config.train
  tx = optim.optimizer_from_config(tc)
  batches = data.TrainBatches(*dataset.arrays["train"], tc.batch_size, config.seed)
  state = step.init_state(model, tx, jax.random.PRNGKey(config.seed), batches(0))
  train_step = jax.jit(step.make_train_step(
      model, tx, schedules.teacher_forcing_from_config(tc.teacher_forcing), tc.label_smoothing,
      tc.loss_normalization, optim.learning_rate_schedule(tc)))
  out = []
  for i in range(steps):
    state, metrics = train_step(state, batches(i), jax.random.PRNGKey(config.seed))
    out.append(jax.device_get(metrics))
  return out


CASES = {  # name: (lr schedule, steps, whether members feed back predictions)
    "gold": ("constant", 50, False),
    "rsqrt": ("rsqrt", 20, False),
    "sampled": ("constant", 20, True),
}


_SOLO = {}  # case -> the members' solo losses, computed once for both widths


# Both widths of a case on one worker, which computes the solo runs once.
@pytest.mark.parametrize("case,width", [
    pytest.param(case, width, id=f"{case}-{name}",
                 marks=pytest.mark.xdist_group(f"stacked_member_{case}"))
    for case in sorted(CASES) for width, name in ((None, "vmap"), (1, "map"))])
def test_a_stacked_member_trains_as_it_would_alone(case, width):
  """Same data order and teacher-forcing coins, losses to 1e-5 relative.

  vmap batches every matmul over the members, and XLA's batched kernels round
  differently from the single ones: the losses differ by about 1e-6 relative at
  first, and the differences compound with the updates: within 1e-5 for 50 steps
  on the quick data split by hash (used here), 2.6e-5 by step 48 on the by-length
  split, the default since issue 17 (measured). A member fed its own argmax
  predictions has a near tie in some argmax now and then, which that difference
  can resolve the other way (a solo
  run on another CPU would too): measured first after about 40 steps of this
  model, so the sampled case holds for 20.
  """
  lr_schedule, steps, sampled = CASES[case]
  base = config_utils.load_module(ROOT / "configs" / "default.py").get_config("quick")
  base.dataset.number_split = "hash"  # the data the tolerance was measured on (above)
  base.train.lr_schedule, base.train.warmup_steps = lr_schedule, 10
  tf = "train__teacher_forcing__"
  linear = {tf + "schedule": "linear", tf + "k": 1.0, tf + "c": 0.01, tf + "eps_min": 0.25}
  exponential = {tf + "schedule": "exponential", tf + "k": 0.97}
  configs = [
      _member(base, seed=0, train__learning_rate=3e-3, **(linear if sampled else {})),
      _member(base, seed=1, train__learning_rate=1e-3, train__label_smoothing=0.1,
              train__clip_norm=0.5, train__warmup_steps=20, **(exponential if sampled else {})),
      _member(base, seed=2, train__learning_rate=2e-3, train__warmup_steps=5),  # gold only
  ]
  dataset = data.load(base.dataset)
  model = models.build(base.model, len(dataset.src_vocab), len(dataset.tgt_vocab))
  if case not in _SOLO:
    _SOLO[case] = [_solo_losses(model, dataset, c, steps) for c in configs]
  solo = _SOLO[case]
  batches = [data.TrainBatches(*dataset.arrays["train"], c.train.batch_size, c.seed)
             for c in configs]
  tx = optim.optimizer_from_config(base.train)
  state = stack.stack_trees([step.init_state(model, tx, jax.random.PRNGKey(c.seed), b(0))
                             for c, b in zip(configs, batches)])
  rngs = stack.stack_trees([jax.random.PRNGKey(c.seed) for c in configs])
  hypers = stack.stack_trees([stack.member_hyper(c) for c in configs])
  step_fn = jax.jit(stack.make_stacked_train_step(model, base.train, sampled, width))
  alive = jnp.ones(3, bool)
  worst = 0.0
  for i in range(steps):
    batch = stack.stacked_batch(batches, i)
    for k in range(3):  # the data order is the member's own
      np.testing.assert_array_equal(batch["src"][k], batches[k](i)["src"])
    state, metrics = step_fn(state, batch, rngs, hypers, alive)
    metrics = jax.device_get(metrics)
    for k in range(3):
      assert metrics["tf_ratio"][k] == solo[k][i]["tf_ratio"], (i, k)  # the same coins
      np.testing.assert_allclose(metrics["learning_rate"][k], solo[k][i]["learning_rate"],
                                 rtol=1e-6)
      rel = abs(metrics["loss"][k] - solo[k][i]["loss"]) / abs(solo[k][i]["loss"])
      worst = max(worst, rel)
      assert rel < 1e-5, (i, k, metrics["loss"][k], solo[k][i]["loss"])
  assert metrics["alive"].all()
  print(f"{case}, width {width}: largest relative loss difference over {steps} steps: "
        f"{worst:.2e}")


def test_members_that_change_shapes_or_code_paths_are_refused_in_one_stack():
  base = config_utils.load_module(ROOT / "configs" / "default.py").get_config("quick")
  configs = [_member(base, seed=0), _member(base, seed=1, model__cell="gru")]
  assert stack.stack_key(configs[0]) != stack.stack_key(configs[1])
  with pytest.raises(ValueError, match="model.cell"):
    stack.check_stackable(configs)
  assert stack.stack_key(_member(base, seed=5, train__learning_rate=1.0)) == \
      stack.stack_key(configs[0])
  assert stack.stack_key(_member(base, train__clip_norm=0.0)) != stack.stack_key(configs[0])
  # members that may stop at their own step share a stack (each is frozen when it stops)
  stopping = [_member(base, seed=s, train__early_stopping__patience=2) for s in (0, 1)]
  stack.check_stackable(stopping)


# ----- stacked sweeps -----

def run_sweep(workdir, *flags, arg="nan", wait=True):
  cmd = [sys.executable, "-m", "seq2seq_jax.sweep", f"--config={CONFIG}:{arg}",
         f"--workdir={workdir}", *flags]
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _metrics(member_dir: Path) -> list[dict]:
  records = [json.loads(ln) for ln in (member_dir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def _names(root, arg):
  return [ln.split("\t")[2] for ln in run_sweep(root, "--list", arg=arg).stdout.splitlines()]


# Session scope and one xdist group: built once, on one worker, for every test
# that reads it (a module fixture is rebuilt whenever the worker runs another
# module between them).
@pytest.fixture(scope="session")
def sweeps(tmp_path_factory):
  base = tmp_path_factory.mktemp("stack")
  whole, healthy = base / "whole", base / "healthy"
  proc = run_sweep(whole)
  assert proc.returncode == 1, proc.stdout + proc.stderr  # member 2 failed
  # The healthy sweep is killed with -9 at step 20 and resumed: the others' reference
  # beside a healthy member, the kill test's (against `whole`) and the baseline's.
  names = _names(whole, "nan")  # members 0, 1 and 3 are named alike in both sweeps
  status = healthy / "status" / f"{names[0]}.json"
  proc = run_sweep(healthy, wait=False, arg="")
  deadline = time.time() + 600
  while time.time() < deadline:
    if (healthy / "members" / names[3] / "checkpoints" / "last" / "20").exists():
      os.kill(json.loads(status.read_text())["pid"], signal.SIGKILL)
      break
    time.sleep(0.05)
  proc.communicate(timeout=900)
  assert json.loads(status.read_text())["state"] == "interrupted"
  resumed = run_sweep(healthy, arg="")
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  return whole, healthy, names


@pytest.mark.xdist_group("stack_sweeps")
def test_a_nan_member_is_frozen_and_the_others_are_untouched(sweeps):
  """Beside a NaN member the others compute exactly what they compute beside a
  healthy one."""
  whole, healthy, names = sweeps
  failed = json.loads((whole / "status" / f"{names[2]}.json").read_text())
  assert failed["state"] == "failed"
  assert re.search(r"training loss is (nan|inf) at step 2 ", failed["error"]), failed["error"]
  assert not (whole / "members" / names[2] / "report.md").exists()
  beside_healthy = _names(healthy, "")
  assert [beside_healthy[i] for i in (0, 1, 3)] == [names[i] for i in (0, 1, 3)]
  for name in (names[0], names[1], names[3]):
    assert json.loads((whole / "status" / f"{name}.json").read_text())["state"] == "done"
    assert _metrics(whole / "members" / name) == _metrics(healthy / "members" / name), name
  summary = (whole / "summary.md").read_text()
  assert re.search(r"training loss is (nan|inf) at step 2 ", summary.split("## Failed")[1])


@pytest.mark.xdist_group("stack_sweeps")
def test_kill_9_of_a_stack_resumes_every_member_exactly(sweeps):
  """Killed at step 20 and resumed, the healthy sweep's members end as the NaN sweep's
  uninterrupted others do. (One equality shows both claims: a broken resume, or a
  NaN member that leaks into the others, would each break it.)"""
  whole, healthy, names = sweeps
  log = (healthy / "logs" / f"{names[0]}.log").read_text()
  assert "resumed 4 members at step 20" in log, log
  for name in (names[0], names[1], names[3]):
    assert _metrics(healthy / "members" / name) == _metrics(whole / "members" / name), name


@pytest.mark.xdist_group("stack_sweeps")
def test_the_sweep_lists_its_members_stack(sweeps):
  """(A stacked member's files and numbers against its solo run's:
  test_stack_early_stopping.py.)"""
  whole = sweeps[0]
  listing = run_sweep(whole, "--list").stdout.splitlines()
  assert [ln.split("\t")[3].split("  (")[0] for ln in listing] == ["stack 0"] * 4
  proc = run_sweep(whole, "--stack_index=1")
  assert proc.returncode == 2 and "the sweep has 1 stacks" in proc.stderr


@pytest.mark.xdist_group("stack_sweeps")
def test_a_stacked_sweep_computes_what_the_baseline_computed(sweeps, baseline_code, tmp_path):
  """The 4-member stacked sweep of today's code (the fixture's `healthy`, killed at
  step 20 and resumed) against the same sweep run uninterrupted by the code of
  `conftest.BASELINE_COMMIT`: every member's metrics.jsonl (timing out) and
  predictions byte for byte (`test_regression.py`)."""
  healthy, names = sweeps[1], _names(sweeps[1], "")
  files = ("metrics.jsonl", "predictions_dev.txt", "predictions_test.txt")
  run_files(baseline_code, ["--config=tests/configs/stack_quick.py:"], tmp_path,
            "seq2seq_jax.sweep", files=(), xla_flags=os.environ["XLA_FLAGS"])  # as `sweeps` ran
  for name in names:
    for file in files:
      today, baseline = ((d / "members" / name / file).read_bytes() for d in (healthy, tmp_path))
      if file.endswith(".jsonl"):
        today, baseline = (without_timing(x, ADDED_METRICS) for x in (today, baseline))
      assert today == baseline, f"{name}/{file} differs from the baseline commit's"


@pytest.mark.slow  # suite time; the solo loop's Ctrl-C tests stay in the default run
@pytest.mark.xdist_group("stack_sweeps")
def test_ctrl_c_of_a_stacked_sweep_stops_its_stack_at_a_step_and_resumes_it(sweeps, tmp_path):
  """SIGINT to the driver: it stops the stack with SIGTERM, which ends at a step
  boundary with its saves complete; the rerun ends where an uninterrupted one does."""
  healthy, names = sweeps[1], _names(tmp_path, "")
  driver = subprocess.Popen([sys.executable, "-m", "seq2seq_jax.sweep", f"--config={CONFIG}:",
                             f"--workdir={tmp_path}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  checkpoint = tmp_path / "members" / names[0] / "checkpoints" / "last" / "10"
  deadline = time.time() + 600
  while not checkpoint.is_dir():
    assert driver.poll() is None and time.time() < deadline
    time.sleep(0.05)
  driver.send_signal(signal.SIGINT)
  _, err = driver.communicate(timeout=120)
  assert driver.returncode == 130, err
  assert re.match(r"error: stopped by SIGINT while the sweep ran; its members in flight stopped "
                  r"at a step boundary", err.strip().splitlines()[-1]), err
  for name in names:
    status = json.loads((tmp_path / "status" / f"{name}.json").read_text())
    assert status["state"] == "interrupted", status
    assert re.match(r"stopped by SIGTERM after step \d+; the last checkpoint is step \d+",
                    status["error"]), status
  assert "Traceback" not in (tmp_path / "logs" / "stack-0.log").read_text()
  proc = run_sweep(tmp_path, arg="")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for name in names:
    assert _metrics(tmp_path / "members" / name) == _metrics(healthy / "members" / name), name

def test_stack_option_plans_the_stacks(tmp_path):
  def stacks(*flags):
    out = run_sweep(tmp_path, "--list", *flags, arg="").stdout.splitlines()
    return [ln.split("\t")[3] for ln in out]
  assert stacks() == ["stack 0"] * 4
  assert stacks("--stack=3") == ["stack 0"] * 3 + ["stack 1"]
  assert stacks("--stack=1") == [f"stack {j}" for j in range(4)]
  # members that may stop at their own step, or start from another run, stack too
  assert stacks("--config.train.early_stopping.patience=2") == ["stack 0"] * 4
  assert stacks(f"--config.train.init_from={tmp_path}") == ["stack 0"] * 4
  proc = run_sweep(tmp_path, "--stack=0", arg="")
  assert proc.returncode == 2
  assert proc.stderr.strip() == "error: --stack must be auto or a number >= 1, got '0'"
