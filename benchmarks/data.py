"""Data at scale: preparing a corpus once, and starting and training on it, against
the code that read every corpus into memory at every start (issue 28).

    python benchmarks/data.py [--sizes 50k,200k,800k,3.2M] [--old_sizes 50k,200k]
        [--dir /tmp/seq2seq_data_bench] [--steps 40]

For each size, a synthetic corpus (`benchmarks/synthetic_corpus.py`: 5-40 words a
sentence, 50,000-word Zipf vocabularies a side) is made once, then, with
`configs/deen_attention.py` on `tsv:CORPUS` and `dataset.vocab_size=16000`
(sentencepiece unigram), dev and test 500 pairs each:

* prepare: `python -m seq2seq_jax.data prepare` in a fresh cache: wall and CPU
  seconds (the process and its workers), the peak RSS of the process tree (sampled
  every 0.1 s), source tokens a word and the share of training pairs over the
  length limits (64 tokens);
* train, new: `main` for `--steps` steps in a fresh workdir on the prepared data:
  the `loaded ... in X s` of its log (the second start of a prepared corpus), its
  tokens/s (median of the logged intervals after the first) and its peak RSS;
* train, old: the same command with the code of `IN_MEMORY_DATA_COMMIT`
  (`tests/conftest.py`, exported from git) for the sizes of `--old_sizes`: its
  loading (tokenizing everything) and tokens/s, side by side, in this process's
  order (old, then new, per size).

A 40M-pair projection of preparing (wall, from the slope between the two largest
sizes) ends the table. Slow: the 3.2M row prepares about 530 MB of text.
"""

import argparse
import json
import os
from pathlib import Path
import re
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import IN_MEMORY_DATA_COMMIT, extract_commit  # noqa: E402
import synthetic_corpus  # noqa: E402

SIZES = {"50k": 50_000, "200k": 200_000, "800k": 800_000, "3.2M": 3_200_000}
DATASET = ["--config.dataset.vocab_size=16000", "--config.dataset.dev_size=500",
           "--config.dataset.test_size=500"]


def tree_rss(pid: int, field: str = "VmRSS") -> int:
  """Resident bytes of `pid` and its descendants (`RssAnon`: its own memory, not
  the pages of files it maps, which the kernel may drop and read again)."""
  total, todo = 0, [pid]
  while todo:
    p = todo.pop()
    try:
      status = Path(f"/proc/{p}/status").read_text()
      total += int(re.search(field + r":\s+(\d+)", status).group(1)) * 1024
      for task in Path(f"/proc/{p}/task").iterdir():
        todo += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, AttributeError):
      pass
  return total


def measured(cmd: list[str], env: dict, cwd: Path = ROOT) -> dict:
  """Runs `cmd`: wall and CPU seconds (its tree), peak tree RSS, stderr."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  peak = anon = 0
  while proc.poll() is None:
    peak, anon = max(peak, tree_rss(proc.pid)), max(anon, tree_rss(proc.pid, "RssAnon"))
    time.sleep(0.1)
  out, err = proc.communicate()
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return {"wall": time.time() - t0, "cpu": cpu, "peak": peak, "anon": anon, "log": out + err}


def prepare(corpus: Path, cache: Path) -> dict:
  env = {**os.environ, "SEQ2SEQ_JAX_CACHE": str(cache)}
  flags = ["--config=configs/deen_attention.py", "--vocab_size=16000", "--dev_size=500",
           "--test_size=500"]
  r = measured([sys.executable, "-m", "seq2seq_jax.data", "prepare", f"tsv:{corpus}", *flags],
               env)
  meta = next(cache.glob("prepared/*/tokens-*/meta.json"))
  stats = json.loads(meta.read_text())["stats"]["train"]
  r["pieces"] = stats["src_tokens"] / stats["src_words"]
  tokens = meta.parent
  lengths = [np.diff(np.load(tokens / f"train.{s}.offsets.npy")) for s in ("src", "tgt")]
  r["over"] = float(np.mean((lengths[0] > 64) | (lengths[1] > 64)))
  return r


def train(tree: Path, corpus: Path, cache: Path, workdir: Path, steps: int) -> dict:
  env = {**os.environ, "SEQ2SEQ_JAX_CACHE": str(cache),
         "PYTHONPATH": str(tree)}
  cmd = [sys.executable, "-m", "seq2seq_jax.main", "--config=configs/deen_attention.py",
         f"--config.dataset.name=tsv:{corpus}", *DATASET, f"--config.train.num_steps={steps}",
         "--config.train.log_every_steps=10", f"--config.train.checkpoint_every_steps={steps}",
         f"--config.eval.every_steps={steps}", "--config.eval.max_examples=32",
         "--config.dataset.max_dropped_fraction=1.0", f"--workdir={workdir}"]
  if tree != ROOT:  # the old code has no max_dropped_fraction
    cmd.remove("--config.dataset.max_dropped_fraction=1.0")
  r = measured(cmd, env, cwd=tree)
  r["loading"] = float(re.search(r"loaded \d+ training pairs in ([\d.]+) s", r["log"]).group(1))
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  rates = sorted(x["tokens_per_s"] for x in rows if "tokens_per_s" in x)[1:] or [float("nan")]
  r["tok_s"] = rates[len(rates) // 2]
  return r


def batch_read_ms(cache: Path, corpus: Path, batches: int = 300) -> tuple[float, float]:
  """Median ms to build a training batch (64 pairs, the config's buckets) from the
  prepared, memory-mapped tokens and from the same tokens as padded arrays in memory
  (the code before's form), alternating one batch of each."""
  os.environ["SEQ2SEQ_JAX_CACHE"] = str(cache)
  from seq2seq_jax import config_schema, config_utils, data
  config = config_utils.load_module(ROOT / "configs" / "deen_attention.py").get_config()
  config.dataset.update(name=f"tsv:{corpus}", vocab_size=16000, dev_size=500, test_size=500,
                        max_dropped_fraction=1.0)
  cfg = config_schema.build(config).dataset
  src, tgt = data.load(cfg).arrays["train"]
  prepared = data.TrainBatches(src, tgt, 64, 0, cfg.bucket_boundaries)
  arrays = (np.asarray(src), np.asarray(tgt))  # padded [N, width], as the code before held
  times = {"prepared": [], "memory": []}
  for i in range(batches):
    t = time.perf_counter()
    prepared(i)
    times["prepared"].append(time.perf_counter() - t)
    rows, bucket = prepared._plan[i % prepared.per_epoch]
    _, s_len, t_len = prepared.buckets[bucket]
    t = time.perf_counter()  # the code before's TrainBatches.__call__ of that batch
    real = rows >= 0
    np.where(real[:, None], arrays[0][np.maximum(rows, 0), :s_len], 0)
    np.where(real[:, None], arrays[1][np.maximum(rows, 0), :t_len], 0)
    times["memory"].append(time.perf_counter() - t)
  return tuple(1e3 * float(np.median(times[k])) for k in ("prepared", "memory"))


def old_code(directory: Path) -> Path:
  tree = directory / f"code_{IN_MEMORY_DATA_COMMIT[:7]}"
  if not (tree / "seq2seq_jax").exists():
    tree.mkdir(parents=True, exist_ok=True)
    extract_commit(IN_MEMORY_DATA_COMMIT, tree)
  return tree


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default="50k,200k,800k,3.2M")
  parser.add_argument("--old_sizes", default="50k,200k")
  parser.add_argument("--dir", default="/tmp/seq2seq_data_bench")
  parser.add_argument("--steps", type=int, default=40)
  args = parser.parse_args()
  base = Path(args.dir)
  base.mkdir(parents=True, exist_ok=True)
  rows, gb = [], 1 << 30
  print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
  for size in args.sizes.split(","):
    n = SIZES[size]
    corpus = base / f"synthetic_{size}.tsv"
    if not corpus.exists():
      synthetic_corpus.write_corpus(corpus, n)
    run = base / f"run_{size}"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    row = {"size": size}
    if size in args.old_sizes.split(","):
      old = train(old_code(base), corpus, run / "cache_old", run / "old", args.steps)
      row.update(old_load=old["loading"], old_tok_s=old["tok_s"], old_peak=old["peak"] / gb,
                 old_anon=old["anon"] / gb)
    p = prepare(corpus, run / "cache")
    new = train(ROOT, corpus, run / "cache", run / "new", args.steps)
    row.update(prep_wall=p["wall"], prep_cpu=p["cpu"], prep_peak=p["peak"] / gb,
               pieces=p["pieces"], over=p["over"], load=new["loading"], tok_s=new["tok_s"],
               peak=new["peak"] / gb, anon=new["anon"] / gb, n=n)
    if n <= 800_000:  # the padded copy of 3.2M pairs would take 2 GB
      row["read_ms"] = batch_read_ms(run / "cache", corpus)
    rows.append(row)
    print(json.dumps(row), flush=True)
  print()
  print("| pairs | prepare wall / CPU s | prepare peak RSS | source tokens a word | train pairs "
        "over 64 | second start: loading | training peak RSS (anonymous) | tok/s | a batch "
        "read, prepared / in memory | before: loading | before: peak RSS (anonymous) | "
        "before: tok/s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    before = (f"{r['old_load']:.1f} s | {r['old_peak']:.2f} ({r['old_anon']:.2f}) GB | "
              f"{r['old_tok_s']:.0f}" if "old_load" in r else "- | - | -")
    read = "{:.3f} / {:.3f} ms".format(*r["read_ms"]) if "read_ms" in r else "-"
    print(f"| {r['size']} | {r['prep_wall']:.1f} / {r['prep_cpu']:.1f} | {r['prep_peak']:.2f} GB "
          f"| {r['pieces']:.3f} | {100 * r['over']:.2f}% | {r['load']:.1f} s | {r['peak']:.2f} "
          f"({r['anon']:.2f}) GB | {r['tok_s']:.0f} | {read} | {before} |")
  if len(rows) >= 2:
    a, b = rows[-2], rows[-1]
    slope = (b["prep_wall"] - a["prep_wall"]) / (b["n"] - a["n"])
    print(f"\nprojected prepare of 40M pairs: {(b['prep_wall'] + slope * (40e6 - b['n'])) / 60:.0f}"
          f" min wall (slope {slope * 1e6:.1f} s per million pairs between {a['size']} and "
          f"{b['size']})")


def cpu_name() -> str:
  for line in Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return "unknown"


if __name__ == "__main__":
  main()
