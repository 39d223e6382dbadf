"""The files of a run's workdir beside its checkpoints: config, environment,
vocabularies, metrics (JSON lines and TensorBoard), the progress line, the report."""

import importlib.metadata
import json
import logging
from pathlib import Path
import subprocess
import sys
import time

import jax
from tensorboardX import SummaryWriter

from seq2seq_jax import config_utils, data
from seq2seq_jax.data.vocab import load_vocab

log = logging.getLogger(__name__)

TIMING_FIELDS = ("tokens_per_s", "wall_s")  # the only metrics that differ between identical runs
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy",
            "sacrebleu")


class MetricWriter:
  """`metrics.jsonl` (one JSON object a line) and TensorBoard events."""

  def __init__(self, workdir: Path, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    # Lines after the checkpoint we resume from were written by the stopped
    # run and will be written again; so will the test split's, written last.
    if self.path.exists():
      lines = [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]
      kept = [json.dumps(r) for r in lines if r["step"] <= resume_step and r["split"] != "test"]
      self.path.write_text("".join(ln + "\n" for ln in kept))
    self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1)

  def write(self, record: dict) -> None:
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in record.items():
      if isinstance(value, (int, float)) and key not in ("step",):
        self.tb.add_scalar(f"{record['split']}/{key}", value, record["step"])
    self.tb.flush()

  def close(self) -> None:
    self.tb.close()


class Progress:
  """A progress line on a terminal, plain log lines otherwise."""

  def __init__(self, total: int, start: int):
    self.total, self.start, self.t0 = total, start, time.time()
    self.tty = sys.stderr.isatty()

  def update(self, step: int, record: dict) -> None:
    done = step - self.start
    rate = done / max(time.time() - self.t0, 1e-9)
    eta = (self.total - step) / max(rate, 1e-9)
    line = (f"step {step}/{self.total}  loss {record['loss']:.4f}  "
            f"{record['tokens_per_s']:.0f} tok/s  ETA {eta / 60:.1f} min")
    if self.tty:
      sys.stderr.write("\r" + line + " " * 8)
      sys.stderr.flush()
    else:
      log.info(line)

  def message(self, text: str) -> None:
    if self.tty:
      sys.stderr.write("\n")
    log.info(text)


def environment() -> dict:
  """Python and package versions, the platform and the git revision of this code."""
  env = {"python": sys.version.split()[0], "platform": jax.devices()[0].platform}
  for pkg in PACKAGES:
    try:
      env[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      env[pkg] = None
  try:
    root = Path(__file__).resolve().parents[2]
    env["git_revision"] = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
        timeout=10).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    env["git_revision"] = None
  return env


def prepare(config, workdir: Path, config_mismatch: str) -> None:
  """Writes `config.json` and `environment.json`; a workdir holding a run of
  another config is refused unless `config_mismatch="allow"`."""
  workdir.mkdir(parents=True, exist_ok=True)
  resolved = json.loads(json.dumps(config.to_dict()))  # as saved: tuples become lists
  path = workdir / "config.json"
  if path.exists():
    diffs = config_utils.differences(config_utils.read_saved(path), resolved)
    if diffs and config_mismatch != "allow":
      raise ValueError(f"{workdir} holds a run with another config; differing fields: "
                       f"{'; '.join(diffs)}. Use another --workdir, or "
                       "--config_mismatch=allow to resume anyway")
    if diffs:
      log.warning("config differs from the saved one (allowed): %s", "; ".join(diffs))
  path.write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
  (workdir / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")


def load_data(config, workdir: Path) -> data.Dataset:
  """The dataset, with the vocabularies saved in the workdir (made on the first run)."""
  src_path, tgt_path = workdir / "vocab_src.json", workdir / "vocab_tgt.json"
  if src_path.exists() and tgt_path.exists():
    return data.load(config.dataset, load_vocab(src_path), load_vocab(tgt_path))
  dataset = data.load(config.dataset)
  dataset.src_vocab.save(src_path)
  dataset.tgt_vocab.save(tgt_path)
  return dataset


def write_report(workdir: Path, config, model_summary: str, has_attention: bool,
                 results: dict, step: int, wall: float) -> None:
  """`report.md`: the final metrics of each split, BLEU by length, the attention maps."""
  lines = [f"# {config.dataset.name}: {model_summary}",
           "", f"Step {step} of {config.train.num_steps}; {wall / 60:.1f} min of training in "
           "this process (see metrics.jsonl for all evaluations).", "",
           "| split | loss | ppl | BLEU | chrF | exact match |", "|---|---|---|---|---|---|"]
  for split, res in results.items():
    m = res["metrics"]
    lines.append(f"| {split} | {m['loss']:.4f} | {m['ppl']:.3f} | {m['bleu']:.2f} | "
                 f"{m['chrf']:.2f} | {m['exact_match']:.4f} |")
  lines += ["", "BLEU by source length (dev):", "", "| source tokens | sentences | BLEU |",
            "|---|---|---|"]
  lines += [f"| {r['bucket']} | {r['n']} | {r['bleu']:.2f} |"
            for r in results["dev"]["bleu_by_length"]]
  lines += ["", f"sacrebleu: `{results['dev']['signature']['bleu']}`, "
            f"`{results['dev']['signature']['chrf']}`", ""]
  plots = sorted((workdir / "attention").glob("final_*.png")) if has_attention else []
  lines += [f"![attention {p.stem}](attention/{p.name})" for p in plots]
  (workdir / "report.md").write_text("\n".join(lines) + "\n")
