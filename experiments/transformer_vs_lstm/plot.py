"""Dev BLEU against training time for the sweep's two arms (and one-seed supplements).

    python experiments/transformer_vs_lstm/plot.py --sweep=workdirs/transformer_vs_lstm \
        --seconds_per_step=rnn:0.469,transformer:0.987 \
        [--extra="pre-norm, peak 2e-3:workdirs/ablation/prenorm_lr2e-3"] [--out=learning_curves.png]

The time axis is steps times the seconds per step that `step_time.py` measured
for each family side by side (the members' own wall times mix in whatever else
the machine ran). Means over seeds; supplements dashed.
"""

import argparse
import json
from pathlib import Path
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def dev_curve(workdir: Path) -> dict:
  records = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["bleu"] for r in records if r["split"] == "dev"}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--sweep", required=True)
  parser.add_argument("--seconds_per_step", required=True)
  parser.add_argument("--extra", action="append", default=[],
                      help="LABEL:WORKDIR of a Transformer run, plotted dashed")
  parser.add_argument("--out", default="learning_curves.png")
  args = parser.parse_args()
  speed = {k: float(v) for k, v in (p.split(":") for p in args.seconds_per_step.split(","))}
  groups = {}
  for member in sorted(Path(args.sweep, "members").iterdir()):
    family = re.search(r"family=(\w+)", member.name).group(1)
    groups.setdefault(family, []).append(dev_curve(member))
  fig, ax = plt.subplots(figsize=(6.5, 4))
  labels = {"rnn": "attention LSTM (3 seeds)", "transformer": "Transformer, swept recipe (3 seeds)"}
  for family, curves in groups.items():
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    mean = [np.mean([c[s] for c in curves]) for s in steps]
    ax.plot(np.array(steps) * speed[family] / 60, mean, "o-", label=labels[family])
  for extra in args.extra:
    label, path = extra.rsplit(":", 1)
    curve = dev_curve(Path(path))
    steps = sorted(curve)
    ax.plot(np.array(steps) * speed["transformer"] / 60, [curve[s] for s in steps], "s--",
            label=f"Transformer, {label} (1 seed)")
  ax.set_xlabel("training minutes (steps x side-by-side seconds per step)")
  ax.set_ylabel("dev BLEU (greedy)")
  ax.set_title("debian:de-en, 2 CPU cores")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
  main()
