"""Early stopping on a dev metric with patience, and the record of a finished run.

`train.early_stopping.patience` dev evaluations in a row without an improvement
of more than `min_delta` in `metric` end training (0: never, the old behaviour).
The count is rebuilt from the dev records of `metrics.jsonl` on resume, so a
stopped run that is resumed stops at the same step. `finished.json` in the
workdir says a run ended (at `num_steps` or early) and holds its final metrics:
rerunning the same command then does nothing.
"""

import json
import logging
from pathlib import Path

from seq2seq_jax import config_schema, config_utils, files
from seq2seq_jax.files import write_atomically

log = logging.getLogger(__name__)

HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "exact_match": True, "loss": False,
                    "ter": False}
FINISHED = "finished.json"
def check(train_config) -> None:
  """ValueError naming the first bad `train.early_stopping` field."""
  s = train_config.early_stopping
  patience, metric, min_delta = s.patience, s.metric, s.min_delta
  if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
    raise ValueError("train.early_stopping.patience must be an int >= 0 (0 = off), got "
                     f"{patience!r}")
  if metric not in HIGHER_IS_BETTER:
    raise ValueError(f"train.early_stopping.metric={metric!r} is not valid; valid: "
                     f"{', '.join(HIGHER_IS_BETTER)}")
  if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
    raise ValueError(f"train.early_stopping.min_delta must be a number >= 0, got {min_delta!r}")


class EarlyStopping:
  """Counts the dev evaluations since the metric last improved."""

  def __init__(self, train_config, records: list[dict] = ()):
    s = train_config.early_stopping
    self.patience, self.metric, self.min_delta = s.patience, s.metric, s.min_delta
    self.best, self.best_step, self.since_best = None, None, 0
    for record in records:  # the resumed run's evaluations
      if record["split"] == "dev":
        self.update(record["step"], record)

  def update(self, step: int, metrics: dict) -> bool:
    """Takes the dev `metrics` of `step`; True when training should stop here."""
    value = float(metrics[self.metric])
    if self.best is None:
      improved = True
    elif HIGHER_IS_BETTER[self.metric]:
      improved = value > self.best + self.min_delta
    else:
      improved = value < self.best - self.min_delta
    if improved:
      self.best, self.best_step, self.since_best = value, step, 0
    else:
      self.since_best += 1
    return self.should_stop

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.since_best >= self.patience

  def reason(self) -> str:
    return (f"stopped early: dev {self.metric} did not improve by more than {self.min_delta:g} "
            f"in {self.since_best} evaluations after step {self.best_step} "
            f"({self.metric} {self.best:g})")


class Plateau:
  """`train.lr_schedule=plateau`: the rate times `plateau_factor` to the number of
  reductions, one each time `plateau_patience` dev evaluations in a row have not
  improved `early_stopping.metric` by more than its `min_delta` (the count restarts
  after a reduction). PyTorch's ReduceLROnPlateau (JoeyNMT's `scheduling: plateau`)
  reduces after patience + 1 such evaluations, its threshold relative. Rebuilt from
  the dev records of `metrics.jsonl` on resume, as `EarlyStopping` is."""

  def __init__(self, train_config, records: list[dict] = ()):
    self.on = train_config.lr_schedule == "plateau"
    self.factor, self.patience = train_config.plateau_factor, train_config.plateau_patience
    self.tracker = EarlyStopping(train_config)  # its rule of an improvement; patience unused
    self.reductions = self.since_change = 0
    for record in records:
      if record["split"] == "dev":
        self.update(record["step"], record)

  def update(self, step: int, metrics: dict) -> bool:
    """Takes the dev `metrics` of `step`; True when the rate goes down here."""
    if not self.on:
      return False
    self.tracker.update(step, metrics)
    self.since_change = 0 if self.tracker.since_best == 0 else self.since_change + 1
    if self.since_change < self.patience:
      return False
    self.reductions, self.since_change = self.reductions + 1, 0
    return True

  @property
  def scale(self) -> float:
    return self.factor ** self.reductions

  def reason(self, rate: float) -> str:
    return (f"dev {self.tracker.metric} has not improved in {self.patience} evaluations: "
            f"learning rate {rate:.3g}")


def write_finished(workdir: Path, ending: dict, results: dict) -> None:
  """`finished.json`: `ending` (step, model_step, reason) and the final metrics."""
  record = {**ending, **{split: r["metrics"] for split, r in results.items()}}
  write_atomically(workdir / FINISHED, json.dumps(record, indent=2) + "\n")


def read_finished(config, workdir: Path) -> dict | None:
  """The finished run's record, if `workdir` holds one of exactly `config` (a run
  resumed with another config, allowed by --config_mismatch, trains on)."""
  path = workdir / FINISHED
  if not path.exists():
    return None
  saved = config_schema.as_dict(config_schema.read_saved(workdir / "config.json"))
  diffs = [d for d in config_utils.differences(saved, config_schema.as_dict(config))
           if not d.startswith("mesh.")]
  if diffs:
    log.info("%s: the config changed since it finished (%s): training on", workdir,
             "; ".join(diffs))
    path.unlink()
    return None
  return files.read_json(path, keys=("step", "reason"))
