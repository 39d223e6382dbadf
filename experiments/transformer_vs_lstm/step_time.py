"""How the two arms' training steps compare in time, on the sweep's own batches.

    python experiments/transformer_vs_lstm/step_time.py [--batches 60]

Builds both arms of `config.py` (the LSTM and the Transformer member of seed 0)
on `debian:de-en`, compiles every bucket's program for both, then runs training
batches 0, 1, ... of the real data round-robin (one step of each in turn, the same
batch for both), so that load on a shared machine hits them alike. Prints the
median and mean time per step and the ratio, which sets the arms' step budgets.
"""

import argparse
from pathlib import Path
import sys
import time

import jax
import numpy as np

from seq2seq_jax import config_utils, data, models, sweep
from seq2seq_jax.training import optim, schedules, step


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batches", type=int, default=60)
  args = parser.parse_args()

  path = Path(__file__).with_name("config.py")
  module = config_utils.load_module(path)
  members = sweep.expand(module.get_config(), str(path), Path("/tmp/step_time_unused"))
  arms = {m.config.model.family: m.config for m in members if m.overrides["seed"] == 0}
  dataset = data.load(arms["rnn"].dataset)
  runs = {}
  for family, config in arms.items():
    tc = config.train
    model = models.build(config.model, len(dataset.src_vocab), len(dataset.tgt_vocab))
    tx = optim.optimizer_from_config(tc)
    batches = data.TrainBatches(*dataset.arrays["train"], tc.batch_size, config.seed,
                                config.dataset.bucket_boundaries)
    state = step.init_state(model, tx, jax.random.PRNGKey(0), batches(0))
    fn = jax.jit(step.make_train_step(
        model, tx, schedules.teacher_forcing_from_config(tc.teacher_forcing),
        tc.label_smoothing, tc.loss_normalization), donate_argnums=(0,))
    runs[family] = {"fn": fn, "state": state, "batches": batches, "times": []}
  # Compile every bucket shape first (the same batches for both arms).
  warm = runs["rnn"]["batches"]
  shapes = {}
  for i in range(2000):
    b = warm(i)
    shapes.setdefault((b["src"].shape, b["tgt"].shape), i)
  rng = jax.random.PRNGKey(1)
  for run in runs.values():
    for i in shapes.values():
      run["state"], m = run["fn"](run["state"], warm(i), rng)
      float(m["loss"])
  tokens = 0
  for i in range(args.batches):
    batch = warm(i)
    tokens += int(np.sum(batch["tgt"] != 0))
    for run in runs.values():
      t0 = time.perf_counter()
      run["state"], m = run["fn"](run["state"], batch, rng)
      float(m["loss"])
      run["times"].append(time.perf_counter() - t0)
  print(f"{args.batches} training batches of debian:de-en, {len(shapes)} bucket shapes, "
        f"{tokens / args.batches:.0f} target tokens a batch; {jax.devices()[0].device_kind}")
  print("| arm | median s/step | mean s/step | target tok/s |")
  print("|---|---|---|---|")
  for family, run in runs.items():
    t = np.array(run["times"])
    print(f"| {family} | {np.median(t):.3f} | {t.mean():.3f} | {tokens / t.sum():.0f} |")
  ratio = np.sum(runs["transformer"]["times"]) / np.sum(runs["rnn"]["times"])
  print(f"transformer / rnn time per step: {ratio:.2f}x")


if __name__ == "__main__":
  sys.exit(main())
