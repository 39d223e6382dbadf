"""One member of a training loop: its workdir's files and its bookkeeping.

A solo run is a stack of one member; a stacked sweep trains K. Each member has
what a run has on its own: its config, workdir (config.json, vocabularies,
metrics.jsonl, TensorBoard events, checkpoints, predictions, report.md,
finished.json, attention maps), warm start, early stopper and data order.
`training.loop` owns the shared step and decides when to log, evaluate and save.
"""

import contextlib
import logging
from pathlib import Path

import jax

from seq2seq_jax import config_schema, data, faults, files, parallel
from seq2seq_jax.training import checkpoints, early_stopping, signals, stack, step, warm_start
from seq2seq_jax.training import workdir as workdir_files
from seq2seq_jax.training.signals import RunInterrupted

log = logging.getLogger(__name__)

TRAINING, STOPPED, FAILED, DONE, FROZEN = "training", "stopped", "failed", "done", "frozen"


@contextlib.contextmanager
def held_workdirs(workdirs: list):
  """This process's lock on each workdir (`files.hold_directory`; None: a frozen slot)
  while the block runs. Only the primary's: a jax.distributed run's processes share it."""
  with contextlib.ExitStack() as held:
    for w in workdirs if parallel.is_primary() else ():
      if w is not None:
        workdir_files.check_writable(Path(w))
        held.enter_context(files.hold_directory(w))
    yield


def interrupt(members: list, signum: int, step_number: int):
  """Completes the members' saves in flight, closes their files and raises
  `RunInterrupted` naming their newest checkpoint."""
  opened = [m for m in members if m.ckpt is not None and m.state != DONE]
  for m in opened:
    m.ckpt.wait()  # a save in flight completes; then the process may end
  saved = [m.ckpt.last.latest_step() for m in opened]  # the members save together
  for m in opened:
    if m.state != FAILED:
      m.close()
  raise RunInterrupted(signum, step_number, None if None in saved else min(saved))


class Member:
  """Slot `slot` of a stack: `config` trained in `workdir` (None: a frozen slot,
  kept so that the program is the whole stack's; it touches no files)."""

  def __init__(self, slot: int, config, workdir: Path | None, config_mismatch: str = "error"):
    self.slot, self.config, self.config_mismatch = slot, config, config_mismatch
    self.workdir = None if workdir is None else Path(workdir).resolve()
    self.state = TRAINING if self.workdir is not None else FROZEN
    self.finished = self.warm = self.ckpt = self.writer = self.stopper = self.dev = None
    self.plateau = None  # train.lr_schedule=plateau's state, with the files
    self.extra = {}  # the last evaluation of each other dev set (dataset.dev_path's)
    self.error, self.offer_best = "", False  # offer_best: this evaluation goes to best/
    self.end = config.train.num_steps  # the step where training ends (early: sooner)
    self.stopping = config.train.early_stopping.patience > 0
    # best/ keeps the best by dev BLEU, or, stopping early, the stopper's best model
    self.best_metric = config.train.early_stopping.metric if self.stopping else "bleu"
    if self.workdir is not None:
      workdir_files.check_config(config, self.workdir, config_mismatch)
      self.finished = early_stopping.read_finished(config, self.workdir)
      if self.finished is not None:  # a rerun of the same command: nothing left to do
        log.info("%s finished at step %d (%s); nothing to do; report: %s", self.workdir,
                 self.finished["step"], self.finished["reason"], self.workdir / "report.md")
        self.state = DONE

  @property
  def name(self) -> str:
    return self.workdir.name if self.workdir is not None else f"slot {self.slot}"

  @property
  def training(self) -> bool:
    return self.state == TRAINING

  @property
  def hyper(self) -> dict:
    """The traced hyperparameters of its slot (`stack.member_hyper`), the rate as
    `train.lr_schedule=plateau` has brought it down so far."""
    return stack.member_hyper(self.config, 1.0 if self.plateau is None else self.plateau.scale)

  def finished_results(self) -> dict:
    """The final metrics of a run that had finished before this process started."""
    return {split: {"metrics": self.finished[split]} for split in ("dev", "test")}

  def start_warm(self) -> None:
    """`train.init_from`, read when the member has no checkpoint of its own yet."""
    init_from = self.config.train.init_from
    if init_from and not any((self.workdir / "checkpoints" / "last").glob("[0-9]*")):
      self.warm = warm_start.WarmStart(init_from)  # a resumed run restores its own
      self.warm.check_vocabularies(self.workdir)
      log.info("warm start from %s (%s checkpoint), with its vocabularies",
               self.warm.directory, self.warm.checkpoint)

  def initial_state(self, model, tx, batches: data.TrainBatches):
    """The state a solo run starts from: the seed's init on its first batch."""
    return step.init_state(model, tx, jax.random.PRNGKey(self.config.seed), batches(0),
                           bool(self.config.train.ema_decay))

  def open_checkpoints(self) -> checkpoints.Checkpoints:
    tc = self.config.train
    with signals.deferred():  # opened whole, so that close() can wait for their threads
      self.ckpt = checkpoints.Checkpoints(
          self.workdir / "checkpoints", tc.keep_checkpoints, best_metric=self.best_metric,
          higher_is_better=early_stopping.HIGHER_IS_BETTER[self.best_metric])
    return self.ckpt

  def open_files(self, start: int, state, devices: dict, log_config: bool) -> None:
    """config.json and environment.json, then the metric writer and the early
    stopper as the run resumed at `start` left them; completes a `best/` that
    a stop between an evaluation's two saves left out."""
    # After the data's and the warm start's errors: a failed start leaves no config.json
    # to refuse the corrected command.
    workdir_files.prepare(self.config, self.workdir, self.config_mismatch, devices)
    faults.point("prepared")
    if log_config:
      log.info("config (also %s):\n%s", self.workdir / "config.json",
               config_schema.to_config_dict(self.config))
    if start:
      log.info("resumed from %s at step %d", self.workdir / "checkpoints", start)
      faults.point("restored")
    self.writer = workdir_files.MetricWriter(self.workdir, start)
    self.stopper = early_stopping.EarlyStopping(self.config.train, self.writer.kept)
    self.plateau = early_stopping.Plateau(self.config.train, self.writer.kept)
    if self.stopper.should_stop:  # stopped, then killed before its final evaluation
      self.state, self.end = STOPPED, start
    every = self.config.eval.every_steps
    if start and (start % every == 0 or start == self.config.train.num_steps):
      score = self.writer.dev_metric(start, self.best_metric)
      if score is not None and (not self.stopping or self.stopper.best_step == start):
        self.ckpt.repair_best(start, state, {"step": start, "data_position": start}, score)

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
    if self.ckpt is not None:
      self.ckpt.close()
    self.writer = self.ckpt = None


def restore_members(members: list[Member], templates: list) -> tuple[int, list]:
  """Every member's state at the newest checkpoint step they can all read (0 and
  the `templates`: none). An unreadable checkpoint is moved aside (its step is
  trained again); a member none of whose checkpoints reads is a CheckpointError."""
  common = set.intersection(*[set(m.ckpt.last.all_steps()) for m in members])
  if not common and any(m.ckpt.last.all_steps() for m in members):
    log.warning("the members have no checkpoint step in common; all start from step 0")
  while common:
    newest = max(common)
    restored = [m.ckpt.restore_latest(t, steps=sorted(common)) for m, t in zip(members, templates)]
    reached = min(int(meta["step"]) for _, meta in restored)
    if reached == newest:
      for m, (_, meta) in zip(members, restored):
        if meta["data_position"] != newest:
          raise checkpoints.CheckpointError(f"{m.ckpt.directory}: checkpoint {newest}: data "
                                            f"position {meta['data_position']} != step")
      if len(members) > 1:
        log.info("resumed %d members at step %d", len(members), newest)
      return newest, [state for state, _ in restored]
    common = {s for s in common if s <= reached}  # some member's newer ones were unreadable
  return 0, templates


def resume_members(live: list[Member], states: list, tx, devices: dict, log_config: bool) -> int:
  """Opens the members' checkpoints and files; their states (in `states`) at the
  newest common checkpoint, or a warm start's at step 0. Returns that step."""
  for m in live:  # a warm member has no checkpoints: its start is step 0 (the template)
    if m.warm is not None:  # before any checkpoint manager opens, so a refusal leaves none
      states[m.slot] = m.warm.into(states[m.slot], tx)
  for m in live:
    m.open_checkpoints()
  start, restored = restore_members(live, [states[m.slot] for m in live])
  for m, state in zip(live, restored):
    states[m.slot] = state
  for m in live:
    m.open_files(start, states[m.slot], devices, log_config)
  return start


def load_shared_data(members: list[Member]) -> data.Dataset:
  """The dataset once (a stack's members share `config.dataset`), with the first
  member's vocabularies (or its warm start's); every member's workdir gets them,
  as a solo run's would."""
  first = members[0]
  warm = first.warm and (first.warm.src_vocab, first.warm.tgt_vocab)
  dataset = workdir_files.load_data(first.config, first.workdir, warm)
  for m in members[1:]:
    for name in ("vocab_src.json", "vocab_tgt.json"):
      own, theirs = m.workdir / name, first.workdir / name
      if not own.exists() or not (m.workdir / "config.json").exists():  # (see load_data)
        m.workdir.mkdir(parents=True, exist_ok=True)
        own.write_bytes(theirs.read_bytes())
      elif own.read_bytes() != theirs.read_bytes():
        raise ValueError(f"{own} differs from {theirs}: the member was started with another "
                         "vocabulary; use a fresh workdir for it")
  return dataset
