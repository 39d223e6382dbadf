"""A sweep's results: a table per member, one grouped over seeds, plots.

Writes into the sweep directory:
  summary.md           both tables and the failed members (with the last line of their error)
  members.csv          final dev / test metrics of every finished member
  groups.csv           mean, std (sample, ddof=1) and n over the seeds of each group
  plots/learning_curves.png, plots/bleu_by_length.png, plots/final_bleu.png
"""

import csv
import json
import math
from pathlib import Path

import numpy as np

from seq2seq_jax import hyper

METRICS = ("dev_bleu", "dev_chrf", "dev_exact_match", "dev_loss", "test_bleu", "test_chrf",
           "dev_ter", "test_ter")


def read_member(member) -> dict | None:
  """Final metrics and curves of a member's `metrics.jsonl` (None if it has no test record)."""
  path = Path(member.workdir) / "metrics.jsonl"
  if not path.exists():
    return None
  records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
  dev = [r for r in records if r["split"] == "dev"]
  test = [r for r in records if r["split"] == "test"]
  if not dev or not test:
    return None
  final_dev, final_test = max(dev, key=lambda r: r["step"]), test[-1]
  return {
      "dev_bleu": final_dev["bleu"], "dev_chrf": final_dev["chrf"],
      "dev_exact_match": final_dev["exact_match"], "dev_loss": final_dev["loss"],
      "test_bleu": final_test["bleu"], "test_chrf": final_test["chrf"],
      # a member trained before TER was reported has none
      "dev_ter": final_dev.get("ter", math.nan), "test_ter": final_test.get("ter", math.nan),
      "steps": final_dev["step"],
      "dev_curve": [(r["step"], r["bleu"]) for r in dev],
      "train_curve": [(r["step"], r["loss"]) for r in records if r["split"] == "train"],
      "bleu_by_length": final_dev.get("bleu_by_length", []),
  }


def mean_std(values) -> tuple[float, float, int]:
  """Mean, sample standard deviation (ddof=1; nan for one value) and n."""
  values = [float(v) for v in values]
  n = len(values)
  if not n:
    return math.nan, math.nan, 0
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
  return mean, std, n


def _group_name(key: dict) -> str:
  return ",".join(f"{f.rsplit('.', 1)[-1]}={v}" for f, v in key.items()) or "all"


def _fmt(x, digits=2) -> str:
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summarize(root: Path, members) -> dict:
  """Writes the tables and plots; returns their paths."""
  root = Path(root)
  rows, failed, groups = [], [], {}
  for m in members:
    state = m.state()
    result = read_member(m) if state == "done" else None
    if state in ("failed", "interrupted"):
      failed.append((m, state, m.status().get("error") or ""))
    rows.append((m, state, result))
    if result is not None:
      key = hyper.group_key(m.overrides)
      groups.setdefault(_group_name(key), []).append(result)
  members_csv, groups_csv = root / "members.csv", root / "groups.csv"
  with open(members_csv, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["index", "name", "state", "steps", *METRICS])
    for m, state, r in rows:
      w.writerow([m.index, m.name, state, r["steps"] if r else ""] +
                 [r[k] if r else "" for k in METRICS])
  stats = {g: {k: mean_std([r[k] for r in rs]) for k in METRICS} for g, rs in groups.items()}
  with open(groups_csv, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["group", "n"] + [f"{k}_{s}" for k in METRICS for s in ("mean", "std")])
    for g, st in stats.items():
      w.writerow([g, st["dev_bleu"][2]] + [x for k in METRICS for x in st[k][:2]])
  by_length = _length_stats(groups)
  plots = _plots(root / "plots", groups, by_length[1])
  lines = ["# Sweep summary", "", f"{len(members)} members: "
           f"{sum(s == 'done' for _, s, _ in rows)} done, {len(failed)} failed or interrupted, "
           f"{sum(s in ('pending', 'running') for _, s, _ in rows)} pending or running.", "",
           "## Groups (mean ± std over seeds, n)", "",
           "| group | n | dev BLEU | test BLEU | dev chrF | dev exact match | dev loss | "
           "test TER |",
           "|---|---|---|---|---|---|---|---|"]
  for g, st in stats.items():
    cells = [f"{_fmt(st[k][0])} ± {_fmt(st[k][1])}" for k in
             ("dev_bleu", "test_bleu", "dev_chrf")]
    cells += [f"{_fmt(st[k][0], 3)} ± {_fmt(st[k][1], 3)}" for k in ("dev_exact_match", "dev_loss")]
    cells.append(f"{_fmt(st['test_ter'][0])} ± {_fmt(st['test_ter'][1])}")
    lines.append(f"| {g} | {st['dev_bleu'][2]} | " + " | ".join(cells) + " |")
  lines += _length_table(*by_length)
  lines += ["", "## Members", "",
            "| # | member | state | steps | dev BLEU | test BLEU | dev chrF | test TER |",
            "|---|---|---|---|---|---|---|---|"]
  for m, state, r in rows:
    lines.append(f"| {m.index} | {m.name} | {state} | {r['steps'] if r else '-'} | "
                 f"{_fmt(r['dev_bleu'] if r else None)} | {_fmt(r['test_bleu'] if r else None)} | "
                 f"{_fmt(r['dev_chrf'] if r else None)} | {_fmt(r['test_ter'] if r else None)} |")
  if failed:
    lines += ["", "## Failed", "", "| # | member | state | last line of the error |",
              "|---|---|---|---|"]
    lines += [f"| {m.index} | {m.name} | {state} | {err.replace('|', '/')} |"
              for m, state, err in failed]
  lines += ["", *[f"![{p.stem}](plots/{p.name})" for p in plots], ""]
  (root / "summary.md").write_text("\n".join(lines))
  return {"markdown": root / "summary.md", "members_csv": members_csv,
          "groups_csv": groups_csv, "plots": plots}


def _length_stats(groups: dict) -> tuple[dict, dict]:
  """Final dev BLEU per source-length bucket: {bucket: sentences} in the members' order, and
  {group: {bucket: (mean, std, n)}} over the seeds that have the bucket."""
  buckets = {}
  for rs in groups.values():
    for r in rs:
      for b in r["bleu_by_length"]:
        buckets.setdefault(b["bucket"], b["n"])
  stats = {g: {b: mean_std([x["bleu"] for r in rs for x in r["bleu_by_length"]
                             if x["bucket"] == b]) for b in buckets}
           for g, rs in groups.items()}
  return buckets, stats


def _length_table(buckets: dict, stats: dict) -> list[str]:
  """`_length_stats` as markdown: mean ± std over seeds, sentences per bucket in the header."""
  if not buckets:
    return []
  lines = ["", "## Dev BLEU by source length (mean ± std over seeds)", "",
           "| group | " + " | ".join(f"{b} ({n})" for b, n in buckets.items()) + " |",
           "|---|" + "---|" * len(buckets)]
  for g, st in stats.items():
    cells = [f"{_fmt(st[b][0])} ± {_fmt(st[b][1])}" if st[b][2] else "-" for b in buckets]
    lines.append(f"| {g} | " + " | ".join(cells) + " |")
  return lines


def _mean_curve(curves):
  """Mean over seeds at the steps every curve has."""
  steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves])) if curves else []
  return steps, [np.mean([dict(c)[s] for c in curves]) for s in steps]


def _save(fig, path: Path) -> Path:
  import matplotlib.pyplot as plt  # loaded by _plots already; see there
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def _plots(directory: Path, groups: dict, length_stats: dict) -> list[Path]:
  if not groups:
    return []
  # Imported here: pyplot adds 0.5 s to the start-up of every sweep command and
  # member process (measured), and only the summary plots; the backend goes first.
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for g, rs in groups.items():
    ax1.plot(*_mean_curve([r["train_curve"] for r in rs]), label=g)
    ax2.plot(*_mean_curve([r["dev_curve"] for r in rs]), marker="o", label=g)
  ax1.set(xlabel="step", ylabel="train loss", yscale="log", title="training loss (mean of seeds)")
  ax2.set(xlabel="step", ylabel="dev BLEU", title="dev BLEU (mean of seeds)")
  ax2.legend(fontsize=7)
  paths.append(_save(fig, directory / "learning_curves.png"))
  fig, ax = plt.subplots(figsize=(7, 4))
  for g, st in length_stats.items():
    present = [b for b, (_, _, n) in st.items() if n]
    ax.plot(present, [st[b][0] for b in present], marker="o", label=g)
  ax.set(xlabel="source length (tokens)", ylabel="dev BLEU", title="BLEU by source length")
  ax.legend(fontsize=7)
  paths.append(_save(fig, directory / "bleu_by_length.png"))
  fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(groups) + 2), 4))
  names = list(groups)
  for offset, (key, label) in enumerate((("dev_bleu", "dev"), ("test_bleu", "test"))):
    st = [mean_std([r[key] for r in groups[g]]) for g in names]
    ax.bar(np.arange(len(names)) + 0.4 * offset, [s[0] for s in st], 0.4,
           yerr=[0 if math.isnan(s[1]) else s[1] for s in st], capsize=3, label=label)
  ax.set_xticks(np.arange(len(names)) + 0.2, names, rotation=30, ha="right", fontsize=7)
  ax.set(ylabel="BLEU", title="final BLEU (mean ± std over seeds)")
  ax.legend()
  paths.append(_save(fig, directory / "final_bleu.png"))
  return paths
