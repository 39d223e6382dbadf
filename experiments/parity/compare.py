"""seq2seq_jax against JoeyNMT on the same data: dev BLEU by update, a plot, attention maps.

    python experiments/parity/compare.py --ours=workdirs/parity \
        --joeynmt=workdirs/parity/joeynmt --out=experiments/parity

`--ours` is the sweep of `experiments/parity/config.py`; `--joeynmt` the directory of
`joeynmt_export.py`, whose `seedN/` model directories JoeyNMT trained; `--before`, optional,
the training workdirs of the same runs made with the code before the parity fix. JoeyNMT's
validation outputs (`seedN/STEP.hyps`) are scored here with the same sacrebleu call
(corpus BLEU, 13a) on the same references as ours. Prints a markdown table (mean ±
sample std over seeds), writes `learning_curves.png` and copies both toolkits' attention
maps of the first dev sentences at update 1000 (seed 0).
"""

import argparse
import json
from pathlib import Path
import shutil

import matplotlib
import numpy as np
import sacrebleu

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def ours_curves(workdirs) -> dict:
  """{seed: {step: (bleu, chrf)}} from training workdirs' metrics files."""
  curves = {}
  for workdir in workdirs:
    path = Path(workdir) / "metrics.jsonl"
    config = json.loads((path.parent / "config.json").read_text())
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    curves[config["seed"]] = {r["step"]: (r["bleu"], r["chrf"]) for r in records
                              if r["split"] == "dev"}
  return curves


def joeynmt_curves(export_dir: Path) -> dict:
  """{seed: {step: (bleu, chrf)}}: JoeyNMT's dev outputs, scored here."""
  refs = (export_dir / "data" / "dev.tgt").read_text(encoding="utf-8").splitlines()
  curves = {}
  for model_dir in sorted(export_dir.glob("seed*")):
    if not model_dir.is_dir():
      continue
    scores = {}
    for hyps_path in model_dir.glob("*.hyps"):
      hyps = hyps_path.read_text(encoding="utf-8").splitlines()
      if not hyps_path.stem.isdigit() or len(hyps) != len(refs):
        continue
      scores[int(hyps_path.stem)] = (sacrebleu.corpus_bleu(hyps, [refs]).score,
                                     sacrebleu.corpus_chrf(hyps, [refs]).score)
    curves[int(model_dir.name[len("seed"):])] = scores
  return curves


def stats(curves: dict, step: int, index: int):
  values = [c[step][index] for c in curves.values() if step in c]
  if not values:
    return None
  return np.mean(values), (np.std(values, ddof=1) if len(values) > 1 else 0.0), len(values)


def fmt(stat) -> str:
  return "-" if stat is None else f"{stat[0]:.2f} ± {stat[1]:.2f} (n={stat[2]})"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ours", required=True, help="the sweep directory")
  parser.add_argument("--joeynmt", required=True, help="joeynmt_export.py's --out")
  parser.add_argument("--before", nargs="*", default=[],
                      help="training workdirs of the same runs before the fix (optional)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--attention_step", type=int, default=1000)
  args = parser.parse_args()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  toolkits = {"seq2seq_jax": ours_curves(sorted(Path(args.ours).glob("members/*"))),
              "JoeyNMT 2.3": joeynmt_curves(Path(args.joeynmt))}
  if args.before:
    toolkits["seq2seq_jax before the fix"] = ours_curves(args.before)
  steps = sorted({s for curves in toolkits.values() for c in curves.values() for s in c})
  print("| updates | " + " | ".join(f"{name} dev BLEU" for name in toolkits) + " | " +
        " | ".join(f"{name} dev chrF" for name in toolkits) + " |")
  print("|---|" + "---|" * (2 * len(toolkits)))
  for step in steps:
    print(f"| {step} | " + " | ".join(fmt(stats(c, step, 0)) for c in toolkits.values()) +
          " | " + " | ".join(fmt(stats(c, step, 1)) for c in toolkits.values()) + " |")

  fig, ax = plt.subplots(figsize=(6, 4))
  for name, curves in toolkits.items():
    points = [(s, stats(curves, s, 0)) for s in steps]
    points = [(s, st) for s, st in points if st is not None]
    xs = np.array([s for s, _ in points])
    mean = np.array([st[0] for _, st in points])
    std = np.array([st[1] for _, st in points])
    ax.plot(xs, mean, marker="o", label=f"{name} ({len(curves)} seeds)")
    ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
  ax.set_xlabel("updates (batches of 64 sentences)")
  ax.set_ylabel("dev BLEU (greedy, sacrebleu 13a)")
  ax.set_title("debian:de-en, bidirectional LSTM + general attention")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out / "learning_curves.png", dpi=90)
  plt.close(fig)

  # Seed 0's attention maps of the first dev sentences (the same sentences in all three).
  step = args.attention_step
  maps = {"seq2seq_jax": sorted(Path(args.ours).glob(f"members/*/attention/{step:07d}_*.png")),
          "joeynmt": sorted((Path(args.joeynmt) / "seed0").glob(f"att.{step}.*.png"))}
  if args.before:
    maps["before_fix"] = sorted(Path(args.before[0]).glob(f"attention/{step:07d}_*.png"))
  for name, paths in maps.items():
    for i, path in enumerate(paths[:3]):
      shutil.copy(path, out / f"attention_{name}_{i}.png")


if __name__ == "__main__":
  main()
