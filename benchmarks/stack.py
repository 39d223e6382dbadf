"""Stacked sweep members: training throughput of K members as one vmapped program
against K members in separate processes, two at a time (`sweep --parallel 2`).
Columns are member-steps/s (training steps of one member per second).

    python benchmarks/stack.py [--sizes experiments,reference] [--ks 1,2,4,8,16]
        [--steps 12]

Sizes (batch 64, source and target length 30, Adam, clip 5, teacher forcing):
`experiments`: the reproductions' translation model (`experiments/base.py`):
bidirectional LSTM encoder, LSTM decoder with additive attention, embedding
128, hidden 256, vocabularies of 4000, dropout 0.2. `reference`: the size of
`benchmarks/train_step.py`: a 1-layer LSTM encoder and decoder with dot
attention, embedding 256, hidden 512, vocabularies of 8000. `scheduled_sampling`:
the model of `experiments/scheduled_sampling` (no attention, bidirectional
encoder of 64 a direction, decoder 128, embedding 64, input feeding,
vocabularies of 40 characters) with sampled feedback under the linear schedule.

* stacked: `training.stack.make_stacked_train_step` over K members (different
  seeds and learning rates), jitted with donation as `training.loop` does,
  with the members one after the other in the program (`jax.lax.map`, what the
  runner uses on a CPU) and side by side (`jax.vmap`, what it uses on an
  accelerator); all K and both forms of a size are timed round-robin (one step
  of each in turn) in this process; member-steps/s = K / median step time.
* separate: this script's `--worker` processes, each the solo step of
  `training.run` (`step.make_train_step`) for one member; two run at once, as
  `--parallel 2` runs them, so member-steps/s = 2 / their median step time
  while both run (1 / the step time of one alone for K = 1). Each process also
  pays its start-up and compilation, reported in its own column: a sweep of K
  members pays it K times, a stack once.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from seq2seq_jax import config_utils, models
from seq2seq_jax.training import optim, schedules, stack, step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, L = 64, 30
SIZES = {
    "experiments": dict(vocab=4000, model=dict(cell="lstm", attention="additive",
                                               bidirectional=True, input_feeding=False,
                                               embed_dim=128, hidden_dim=256,
                                               attention_dim=128, dropout=0.2)),
    "reference": dict(vocab=8000, model=dict(cell="lstm", attention="dot", bidirectional=False,
                                             input_feeding=False, embed_dim=256,
                                             hidden_dim=512, dropout=0.0)),
    # experiments/scheduled_sampling: no attention, sampled feedback, characters
    "scheduled_sampling": dict(vocab=40, model=dict(cell="lstm", attention="none",
                                                    bidirectional=True, input_feeding=True,
                                                    embed_dim=64, hidden_dim=128,
                                                    predictions="sample", dropout=0.0),
                               schedule={"schedule": "linear", "k": 1.0, "c": 7.5e-4,
                                         "eps_min": 0.25}),
}


def member_config(size: str, seed: int):
  config = config_utils.load_module(os.path.join(ROOT, "configs", "default.py")).base_config()
  for field, value in SIZES[size]["model"].items():
    config.model[field] = value
  config.seed = seed
  config.train.learning_rate = 1e-3 * (1 + seed % 3)
  config.train.batch_size = B
  for field, value in SIZES[size].get("schedule", {}).items():
    config.train.teacher_forcing[field] = value
  return config


def batch(vocab: int, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, vocab, (2, B, L)).astype(np.int32)
  return {"src": tokens[0], "tgt": tokens[1]}


def build(size: str, k: int, width):
  """The stacked step of k members, compiled, with its arguments."""
  configs = [member_config(size, seed) for seed in range(k)]
  vocab = SIZES[size]["vocab"]
  model = models.build(configs[0].model, vocab, vocab)
  tx = optim.optimizer_from_config(configs[0].train)
  b = batch(vocab, 0)
  state = stack.stack_trees([step.init_state(model, tx, jax.random.PRNGKey(c.seed), b)
                             for c in configs])
  batches = stack.stack_trees([batch(vocab, c.seed) for c in configs])
  rngs = stack.stack_trees([jax.random.PRNGKey(c.seed) for c in configs])
  hypers = stack.stack_trees([stack.member_hyper(c) for c in configs])
  alive = jnp.ones((k,), bool)
  fn = jax.jit(stack.make_stacked_train_step(model, configs[0].train,
                                             stack.needs_sampling(configs[0]), width),
               donate_argnums=(0,))
  t0 = time.perf_counter()
  state, metrics = fn(state, batches, rngs, hypers, alive)
  jax.block_until_ready(metrics)
  return {"fn": fn, "state": state, "args": (batches, rngs, hypers, alive),
          "compile_s": time.perf_counter() - t0}


def time_stacked(size: str, ks: list[int], steps: int) -> dict:
  """`(K, width)` -> timings, for width 1 (`lax.map`) and None (`vmap`)."""
  runs = {(k, w): build(size, k, w) for k in ks for w in (1, None)}
  times = {key: [] for key in runs}
  for _ in range(steps):
    for key, r in runs.items():  # round-robin: load on the machine hits every K alike
      t0 = time.perf_counter()
      r["state"], metrics = r["fn"](r["state"], *r["args"])
      jax.block_until_ready(metrics)
      times[key].append(time.perf_counter() - t0)
  return {key: {"step_s": float(np.median(times[key])), "compile_s": runs[key]["compile_s"]}
          for key in runs}


def worker(size: str, steps: int) -> None:
  """One member alone, as a sweep's member process trains it; prints JSON timings."""
  t_start = time.perf_counter()
  config = member_config(size, 0)
  vocab = SIZES[size]["vocab"]
  model = models.build(config.model, vocab, vocab)
  tc = config.train
  tx = optim.optimizer_from_config(tc)
  b = batch(vocab, 0)
  state = step.init_state(model, tx, jax.random.PRNGKey(0), b)
  fn = jax.jit(step.make_train_step(model, tx, schedules.teacher_forcing_from_config(
      tc.teacher_forcing), tc.label_smoothing, tc.loss_normalization,
      optim.learning_rate_schedule(tc)), donate_argnums=(0,))
  rng = jax.random.PRNGKey(0)
  state, metrics = fn(state, b, rng)
  jax.block_until_ready(metrics)
  ready = time.perf_counter() - t_start
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = fn(state, b, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  print(json.dumps({"ready_s": ready, "step_s": float(np.median(times))}))


def time_separate(size: str, steps: int, at_once: int) -> dict:
  """`at_once` worker processes started together; their timings."""
  cmd = [sys.executable, __file__, "--worker", f"--sizes={size}", f"--steps={steps}"]
  procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(at_once)]
  outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
  return {"step_s": float(np.median([o["step_s"] for o in outs])),
          "ready_s": float(np.mean([o["ready_s"] for o in outs]))}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="scheduled_sampling,experiments,reference")
  parser.add_argument("--ks", default="1,2,4,8,16")
  parser.add_argument("--steps", type=int, default=12)
  parser.add_argument("--worker", action="store_true")
  args = parser.parse_args()
  if args.worker:
    worker(args.sizes, args.steps)
    return
  ks = [int(k) for k in args.ks.split(",")]
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {os.cpu_count()} cores; "
        f"{args.steps} timed steps each, medians")
  print("| size | K | stacked, lax.map | stacked, vmap | separate, --parallel 2 | "
        "lax.map / separate | vmap / separate | stack compile s (map) | member process "
        "start-up + compile s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for size in args.sizes.split(","):
    separate = {1: time_separate(size, args.steps, 1), 2: time_separate(size, args.steps, 2)}
    stacked = time_stacked(size, ks, args.steps)
    for k in ks:
      mapped, vmapped = stacked[(k, 1)], stacked[(k, None)]
      sep = separate[1] if k == 1 else separate[2]
      sep_rate = (1 if k == 1 else 2) / sep["step_s"]
      rate_map, rate_vmap = k / mapped["step_s"], k / vmapped["step_s"]
      print(f"| {size} | {k} | {rate_map:.1f} | {rate_vmap:.1f} | {sep_rate:.1f} | "
            f"{rate_map / sep_rate:.2f}x | {rate_vmap / sep_rate:.2f}x | "
            f"{mapped['compile_s']:.1f} | {sep['ready_s']:.1f} |", flush=True)


if __name__ == "__main__":
  main()
