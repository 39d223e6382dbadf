"""The files of a run's workdir beside its checkpoints: config, environment,
vocabularies, metrics (JSON lines and TensorBoard), the progress line, the report."""

import copy
import importlib.metadata
import json
import logging
import os
from pathlib import Path
import subprocess
import sys
import time

import jax

from seq2seq_jax import config_schema, config_utils, data, files, parallel
from seq2seq_jax.data.vocab import load_vocab
from seq2seq_jax.files import write_atomically

log = logging.getLogger(__name__)

TIMING_FIELDS = ("tokens_per_s", "wall_s")  # the only metrics that differ between identical runs
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy",
            "sacrebleu")
# Where a run is placed, not what it is: a run may resume on another mesh.
PLACEMENT_SECTIONS = ("mesh",)


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch.

  tensorboardX imports torch whenever it is installed, only to accept torch tensors
  as values: 2 s and 180 MB of every run's start (measured, 2-core EPYC) for a run
  that logs floats. A `None` in `sys.modules` makes that `import torch` raise
  ImportError, its fallback; a process that has torch already keeps it."""
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter


def read_metrics(path: Path) -> list[dict]:
  """The records of a `metrics.jsonl`. A torn last line (the run was killed while
  writing it) is dropped with a warning: resume writes it again. A bad line
  before the last is a ValueError naming the file and line."""
  lines = path.read_text(encoding="utf-8").splitlines()
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number == len(lines):
        log.warning("%s:%d: a torn last line (the run was stopped while writing it); "
                    "dropped, resume writes it again", path, number)
        break
      raise ValueError(f"{path}:{number}: not a JSON record ({e.msg}); the file was edited "
                       "or damaged: delete the line, or the workdir to start over") from None
  return records


class MetricWriter:
  """`metrics.jsonl` (one JSON object a line) and TensorBoard events, written by
  the primary process only (the others' writers do nothing)."""

  def __init__(self, workdir: Path, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    self.enabled = parallel.is_primary()
    # Lines after the checkpoint we resume from were written by the stopped
    # run and will be written again; so will the test split's, written last.
    self.kept = []
    if self.path.exists():
      self.kept = [r for r in read_metrics(self.path)
                   if r["step"] <= resume_step and r["split"] != "test"]
    if not self.enabled:
      return
    if self.path.exists():
      write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in self.kept))
    self.tb = _summary_writer_class()(str(workdir / "tensorboard"), purge_step=resume_step + 1)

  def dev_metric(self, step: int, metric: str = "bleu") -> float | None:
    """The dev `metric` recorded at `step` by the run resumed, if any."""
    return next((r[metric] for r in self.kept if r["step"] == step and r["split"] == "dev"),
                None)

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in record.items():
      if isinstance(value, (int, float)) and key not in ("step",):
        self.tb.add_scalar(f"{record['split']}/{key}", value, record["step"])
      elif key.endswith("_by_length"):  # bleu / exact_match of each length bucket
        for row in value:
          self.tb.add_scalar(f"{record['split']}/{key}/{row['bucket']}",
                             row[key[:-len("_by_length")]], record["step"])
    self.tb.flush()

  def add_image(self, tag: str, png: Path, step: int) -> None:
    """A written plot as a TensorBoard image summary."""
    if self.enabled:
      import matplotlib.image  # only where plots are made (matplotlib is slow to import)
      self.tb.add_image(tag, matplotlib.image.imread(png)[..., :3], step, dataformats="HWC")
      self.tb.flush()

  def close(self) -> None:
    if self.enabled:
      self.tb.close()


class Progress:
  """A progress line on a terminal, plain log lines otherwise."""

  def __init__(self, total: int, start: int):
    self.total, self.start, self.t0 = total, start, time.time()
    self.tty = sys.stderr.isatty()
    self.enabled = parallel.is_primary()

  def update(self, step: int, record: dict) -> None:
    if not self.enabled:
      return
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

  def restart(self, step: int) -> None:
    """The rate (and so the ETA) counts from here: after the first step's compilation."""
    self.start, self.t0 = step, time.time()

  def message(self, text: str) -> None:
    if not self.enabled:
      return
    if self.tty:
      sys.stderr.write("\n")
    log.info(text)


def environment(devices: dict | None = None) -> dict:
  """Python and package versions, the devices (`parallel.describe`: platform,
  device kind and count, processes, mesh) and the git revision of this code."""
  env = {"python": sys.version.split()[0], "platform": jax.devices()[0].platform,
         **(devices or {})}
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


def check_writable(workdir: Path) -> None:
  """A workdir must be a directory, or be makeable, and writable (ValueError)."""
  try:
    existing = next(p for p in (workdir, *workdir.parents) if p.exists())
  except OSError as e:  # e.g. a name over the file system's 255 bytes: before, a bare errno
    raise ValueError(f"--workdir={workdir}: {e.strerror}; choose another --workdir") from None
  if not existing.is_dir() and existing == workdir:
    raise ValueError(f"--workdir={workdir} is a file, not a directory: give a directory (it is "
                     "made if missing)")
  if not existing.is_dir():
    raise ValueError(f"--workdir={workdir}: {existing} is a file, so no directory can be made "
                     "under it; choose another --workdir")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir={workdir}: {existing} is not writable; choose another "
                     "--workdir or fix its permissions")


def check_config(config, workdir: Path, config_mismatch: str) -> None:
  """Refuses (ValueError) a workdir holding a run of another config, unless
  `config_mismatch="allow"`; writes nothing, but removes the config.json,
  environment.json and vocabularies of a start that trained nothing there under another
  config. The mesh is not compared: a run may resume on other devices."""
  check_writable(workdir)
  path = workdir / "config.json"
  if not path.exists():
    return
  # Today's meanings of the saved fields; a field the run did not save (and whose
  # absence has no known meaning) shows as <absent>, not as today's default.
  raw = files.read_json(path, keys=())  # names the file when the JSON is damaged
  read = config_utils.flatten(config_schema.as_dict(config_schema.build(copy.deepcopy(raw),
                                                                        saved=True)))
  written = config_utils.flatten(config_schema.migrate(raw))
  saved = {k: v for k, v in read.items() if k in written or k in config_schema.ABSENT}
  diffs = [d for d in config_utils.differences(saved, config_schema.as_dict(config))
           if not d.startswith(tuple(s + "." for s in PLACEMENT_SECTIONS))]
  if diffs and config_mismatch != "allow" and not _trained(workdir):
    # A start that failed before its first update (out of memory, a batch larger than
    # the corpus, a stop): nothing is lost, and its config must not block the fix.
    log.warning("%s: a start with another config (%s) trained nothing there: its config.json, "
                "environment.json and vocabularies are made afresh", workdir, "; ".join(diffs))
    for name in ("config.json", "environment.json", "vocab_src.json", "vocab_tgt.json"):
      (workdir / name).unlink(missing_ok=True)
    return
  if diffs and config_mismatch != "allow":
    raise ValueError(f"{workdir} holds a run with another config; differing fields: "
                     f"{'; '.join(diffs)}. Use another --workdir, or "
                     "--config_mismatch=allow to resume anyway")
  if diffs:
    log.warning("config differs from the saved one (allowed): %s", "; ".join(diffs))


def _trained(workdir: Path) -> bool:
  """Whether a run in `workdir` got as far as a logged step or a checkpoint."""
  metrics = workdir / "metrics.jsonl"
  return (metrics.exists() and metrics.stat().st_size > 0) or any(
      (workdir / "checkpoints" / "last").glob("[0-9]*"))


def prepare(config, workdir: Path, config_mismatch: str, devices: dict | None = None) -> None:
  """`check_config`, then writes `config.json` and `environment.json` (`devices`
  in it). Called once the data has loaded, so that a run that fails on its data
  leaves no workdir behind to refuse the corrected command."""
  check_config(config, workdir, config_mismatch)
  if not parallel.is_primary():
    return
  workdir.mkdir(parents=True, exist_ok=True)
  write_atomically(workdir / "config.json",
                   json.dumps(config_schema.as_dict(config), indent=2, sort_keys=True) + "\n")
  write_atomically(workdir / "environment.json", json.dumps(environment(devices), indent=2) + "\n")


def load_data(config, workdir: Path, vocabularies: tuple | None = None) -> data.Dataset:
  """The dataset, with the vocabularies saved in the workdir (made on the first
  run, or the given `(source, target)` ones: a warm start's).

  Vocabularies without a config.json beside them are a start's that failed (or
  was killed) before training began: made again from this config, not reused (they
  may be of another tokenizer, which config.json would then wrongly claim)."""
  src_path, tgt_path = workdir / "vocab_src.json", workdir / "vocab_tgt.json"
  if not parallel.is_primary():  # the primary makes them; the workdir is shared
    parallel.barrier("vocabularies")
  started = not parallel.is_primary() or (workdir / "config.json").exists()
  if src_path.exists() and tgt_path.exists() and not started:
    log.info("%s: vocabularies of a start that did not reach training; made again", workdir)
  if src_path.exists() and tgt_path.exists() and started:
    dataset = data.load(config.dataset, load_vocab(src_path), load_vocab(tgt_path))
  else:
    dataset = data.load(config.dataset, *(vocabularies or ()))
    if parallel.is_primary():  # made only now that the data has loaded
      workdir.mkdir(parents=True, exist_ok=True)
      dataset.src_vocab.save(src_path)
      dataset.tgt_vocab.save(tgt_path)
  if parallel.is_primary():
    parallel.barrier("vocabularies")
  return dataset


def metrics_table(results: dict) -> list[str]:
  """The markdown rows of each split's final metrics (report.md, its averaged section)."""
  rows = ["| split | loss | ppl | BLEU | chrF | TER | exact match |",
          "|---|---|---|---|---|---|---|"]
  for split, res in results.items():
    m = res["metrics"]
    ter = f"{m['ter']:.2f}" if "ter" in m else "-"  # a result from before TER
    rows.append(f"| {split} | {m['loss']:.4f} | {m['ppl']:.3f} | {m['bleu']:.2f} | "
                f"{m['chrf']:.2f} | {ter} | {m['exact_match']:.4f} |")
  return rows


def write_report(workdir: Path, config, model_summary: str, has_attention: bool,
                 results: dict, step: int, wall: float, stopped_early: str = "") -> None:
  """`report.md`: the final metrics of each split, BLEU by length, the attention maps."""
  lines = [f"# {config.dataset.name}: {model_summary}",
           "", f"Step {step} of {config.train.num_steps}" +
           (f" ({stopped_early})" if stopped_early else "") +
           f"; {wall / 60:.1f} min of training in this process (see metrics.jsonl for all "
           "evaluations).", "", *metrics_table(results)]
  lines += ["", "BLEU by source length (dev):", "", "| source tokens | sentences | BLEU |",
            "|---|---|---|"]
  lines += [f"| {r['bucket']} | {r['n']} | {r['bleu']:.2f} |"
            for r in results["dev"]["bleu_by_length"]]
  lines += ["", "Exact match by source length:", "",
            "| source tokens | " + " | ".join(f"{split} sentences | {split} exact match"
                                             for split in results) + " |",
            "|---|" + "---|---|" * len(results)]
  rows = {split: {r["bucket"]: r for r in res["exact_match_by_length"]}
          for split, res in results.items()}
  for bucket in dict.fromkeys(b for split in rows for b in rows[split]):
    columns = [f"{rows[s][bucket]['n']} | {rows[s][bucket]['exact_match']:.4f}" if bucket in
             rows[s] else "0 | -" for s in results]
    lines.append(f"| {bucket} | " + " | ".join(columns) + " |")
  lines += ["", "sacrebleu: " + ", ".join(f"`{s}`" for s in results["dev"]["signature"].values()),
            ""]
  plots = sorted((workdir / "attention").glob("final_*.png")) if has_attention else []
  lines += [f"![attention {p.stem}](attention/{p.name})" for p in plots]
  write_atomically(workdir / "report.md", "\n".join(lines) + "\n")
