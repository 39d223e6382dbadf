"""The training loop: `train_and_evaluate(config, workdir)`, resuming from the workdir."""

import logging
import math
from pathlib import Path
import shutil
import signal
import threading
import time

import jax
import numpy as np

from seq2seq_jax import config_checks, data, evaluate, models
from seq2seq_jax.files import write_atomically
from seq2seq_jax.tokens import EOS_ID, PAD_ID
from seq2seq_jax.training import (
  checkpoints,
  early_stopping,
  faults,
  optim,
  parallel,
  schedules,
  step,
  warm_start,
)
from seq2seq_jax.training import workdir as workdir_files

log = logging.getLogger(__name__)


def _evaluate_and_record(config, model, params, dataset, split, step_number, writer, workdir,
                         plots_prefix, mesh=None):
  result = evaluate.evaluate(model, params, dataset, split, config.eval, mesh=mesh)
  faults.point("evaluated", step_number)
  return record_evaluation(config, model, params, dataset, split, step_number, writer, workdir,
                           plots_prefix, result)


def record_evaluation(config, model, params, dataset, split, step_number, writer, workdir,
                      plots_prefix, result):
  """Writes an evaluation `result` of `params` to metrics.jsonl, with its attention plots."""
  record = {"step": step_number, "split": split, **result["metrics"],
            "bleu_by_length": result["bleu_by_length"],
            "exact_match_by_length": result["exact_match_by_length"]}
  writer.write(record)
  if (result["attention"] is not None and config.eval.num_attention_plots
      and parallel.is_primary()):
    (workdir / "attention").mkdir(exist_ok=True)
    src_ids = dataset.arrays[split][0]
    for i in range(min(config.eval.num_attention_plots, len(src_ids))):
      src_tokens = dataset.src_vocab.tokens(src_ids[i])
      out_tokens = dataset.tgt_vocab.tokens(result["output_ids"][i]) + ["<eos>"]
      evaluate.plot_attention(result["attention"][i], src_tokens, out_tokens,
                              workdir / "attention" / f"{plots_prefix}_{i}.png",
                              title=f"step {step_number}, model output: "
                              f"{result['hypotheses'][i]}")
      writer.add_image(f"{split}/attention/{i}",
                       workdir / "attention" / f"{plots_prefix}_{i}.png", step_number)
    if plots_prefix.startswith("final"):  # every head of a multi-head model, once
      _plot_heads(model, params, dataset, split, result, workdir / "attention" /
                  f"{plots_prefix}_heads.png", step_number)
  return result


def _plot_heads(model, params, dataset, split, result, path, step_number):
  """The grid of every layer's and head's attention for the split's first sentence."""
  src_ids = dataset.arrays[split][0][0]
  out_ids = np.asarray(result["output_ids"][0])
  out_ids = out_ids[out_ids != PAD_ID]  # the output, <eos> included when it ended
  if not out_ids.size or out_ids[-1] != EOS_ID:
    out_ids = np.append(out_ids, EOS_ID)
  heads = evaluate.attention_heads(model, params, src_ids, out_ids)
  if heads is not None:
    evaluate.plot_attention_heads(
        heads, dataset.src_vocab.tokens(src_ids), dataset.tgt_vocab.tokens(out_ids) + ["<eos>"],
        path, title=f"step {step_number}, model output: {result['hypotheses'][0]}")


def train_record(stats: list[dict], done: int, seconds: float, untimed_tokens: float = 0.0
                 ) -> dict:
  """The `train` line of metrics.jsonl: means over the logging interval (tokens/s
  leaves out `untimed_tokens`, those of a step whose time was compilation)."""
  loss = float(np.mean([m["loss"] for m in stats]))
  return {"step": done, "split": "train", "loss": loss, "ppl": math.exp(min(loss, 50)),
          "token_accuracy": float(np.mean([m["token_accuracy"] for m in stats])),
          "grad_norm": float(np.mean([m["grad_norm"] for m in stats])),
          "tf_ratio": float(np.mean([m["tf_ratio"] for m in stats])),
          "learning_rate": float(stats[-1]["learning_rate"]),  # of the interval's last update
          "tokens_per_s": (sum(float(m["num_tokens"]) for m in stats) - untimed_tokens)
          / max(seconds, 1e-9)}


def nonfinite_message(stats: list[dict], done: int, ckpt, workdir: Path,
                      where: str = "") -> str:
  """What to say of an interval (ending at step `done`) with a non-finite loss or
  gradient norm (or, stacked, a member no longer `alive`): its first such step."""
  def bad(m):
    return (not m.get("alive", True) or not np.isfinite(float(m["loss"]))
            or not np.isfinite(float(m["grad_norm"])))
  j = next(j for j, m in enumerate(stats) if bad(m))
  loss, grad_norm = float(stats[j]["loss"]), float(stats[j]["grad_norm"])
  what = f"training loss is {loss}" if not np.isfinite(loss) else f"gradient norm is {grad_norm}"
  saved = ckpt.last.latest_step()
  return (f"{what} at step {done - len(stats) + 1 + j}{where}; " +
          (f"the last checkpoint is step {saved} in {workdir / 'checkpoints' / 'last'}"
           if saved is not None else "no checkpoint was saved before it"))


def write_outputs(workdir: Path, config, model, results: dict, wall: float,
                  ending: dict | None = None) -> None:
  """The predictions of each split, `report.md` and `finished.json`, at the end of
  a run (by the primary process). `ending`: `step` (where training ended),
  `model_step` (the step of the model evaluated) and `reason`; default: num_steps."""
  if not parallel.is_primary():
    return
  steps = config.train.num_steps
  ending = ending or {"step": steps, "model_step": steps, "reason": "num_steps"}
  for split, result in results.items():
    write_atomically(workdir / f"predictions_{split}.txt",
                     "".join(h + "\n" for h in result["hypotheses"]))
  workdir_files.write_report(workdir, config, model.config.summary, model.has_attention,
                             results, ending["model_step"], wall,
                             "" if ending["reason"] == "num_steps" else ending["reason"])
  early_stopping.write_finished(workdir, ending, results)


def _plots_as_final(workdir: Path, step_number: int) -> None:
  """The dev plots of an early-stopped run's best step are its `final_dev` ones."""
  for path in sorted((workdir / "attention").glob(f"{step_number:07d}_*.png")):
    shutil.copyfile(path, path.with_name("final_dev" + path.name[7:]))


class RunInterrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM stopped a run at a step boundary, its checkpoints complete."""

  def __init__(self, signum: int, step: int, saved: int | None):
    self.exit_code = 128 + signum
    name = signal.Signals(signum).name
    super().__init__(f"stopped by {name} after step {step}; " + (
        f"the last checkpoint is step {saved}: the same command resumes from it"
        if saved is not None else "no checkpoint was saved yet: the same command starts over"))


class StopSignals:
  """Within the block, SIGINT and SIGTERM ask the loop to stop at its next step
  boundary (`signum`); a second one stops at once. Only in the main thread (where
  Python runs signal handlers); the previous handlers come back at the end."""

  def __enter__(self):
    self.signum, self.previous = None, {}
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self.previous[signum] = signal.signal(signum, self._request)
    return self

  def _request(self, signum, frame):
    if self.signum is not None:
      raise KeyboardInterrupt
    self.signum = signum
    log.warning("%s: stopping after this step (send it again to stop at once)",
                signal.Signals(signum).name)

  def __exit__(self, *exc):
    for signum, handler in self.previous.items():
      signal.signal(signum, handler)


def train_and_evaluate(config, workdir, config_mismatch: str = "error") -> dict:
  """Trains `config` in `workdir`, resuming from its last checkpoint.

  Returns:
    the final evaluation results by split.
  """
  config_checks.validate(config)
  workdir = Path(workdir).resolve()
  tc = config.train
  mesh = parallel.make_mesh(config.get("mesh", parallel.DEFAULT_MESH))
  parallel.check_batch_size(tc.batch_size, mesh)
  devices = parallel.describe(mesh)
  log.info("devices: %s", parallel.summary(devices))  # the first line of a run's log
  workdir_files.check_config(config, workdir, config_mismatch)
  finished = early_stopping.read_finished(config, workdir)
  if finished is not None:  # a rerun of the same command: nothing left to do
    log.info("%s finished at step %d (%s); nothing to do; report: %s", workdir,
             finished["step"], finished["reason"], workdir / "report.md")
    return {split: {"metrics": finished[split]} for split in ("dev", "test")}
  t_load = time.time()
  warm = None
  if tc.get("init_from", "") and not any((workdir / "checkpoints" / "last").glob("[0-9]*")):
    warm = warm_start.WarmStart(tc.init_from)  # a resumed run restores its own checkpoints
    warm.check_vocabularies(workdir)
    log.info("warm start from %s (%s checkpoint), with its vocabularies", warm.directory,
             warm.checkpoint)
  log.info("loading %s (and the vocabularies) ...", config.dataset.name)
  dataset = workdir_files.load_data(config, workdir, warm and (warm.src_vocab, warm.tgt_vocab))
  log.info("loaded %d training pairs in %.1f s; vocabularies: %d source, %d target tokens",
           len(dataset.arrays["train"][0]), time.time() - t_load, len(dataset.src_vocab),
           len(dataset.tgt_vocab))
  faults.point("loaded")
  model = models.build(config.model, len(dataset.src_vocab), len(dataset.tgt_vocab))
  tx = optim.optimizer_from_config(tc)
  batches = data.TrainBatches(*dataset.arrays["train"], tc.batch_size, config.seed,
                              config.dataset.get("bucket_boundaries", ()))
  replicated, rows = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  my_rows = parallel.process_rows(tc.batch_size)
  t_init = time.time()
  state = jax.device_put(step.init_state(model, tx, jax.random.PRNGKey(config.seed),
                                         batches(0)), replicated)
  log.info("initialised the model (%s parameters) in %.1f s; compiling the training step ...",
           f"{sum(x.size for x in jax.tree.leaves(state.params)):,}", time.time() - t_init)
  # best/ keeps the best by dev BLEU, or, stopping early, the stopper's best model
  stop_settings = early_stopping.settings(tc)
  stopping = stop_settings["patience"] > 0
  best_metric = stop_settings["metric"] if stopping else "bleu"
  ckpt = checkpoints.Checkpoints(workdir / "checkpoints", tc.keep_checkpoints,
                                 best_metric=best_metric,
                                 higher_is_better=early_stopping.HIGHER_IS_BETTER[best_metric])
  restored = ckpt.restore_latest(state)
  start = 0
  if restored is None and warm is not None:  # a fresh run: the other run's params, step 0
    state = jax.device_put(warm.into(state, tx), replicated)
  # After the data's and the warm start's errors: a failed start leaves no config.json
  # to refuse the corrected command.
  workdir_files.prepare(config, workdir, config_mismatch, devices)
  faults.point("prepared")
  log.info("config (also %s):\n%s", workdir / "config.json", config)
  if restored is not None:
    state, meta = restored
    start = int(meta["step"])
    if meta["data_position"] != start:
      raise checkpoints.CheckpointError(f"checkpoint {start}: data position "
                                        f"{meta['data_position']} != step")
    log.info("resumed from %s at step %d", workdir / "checkpoints", start)
    faults.point("restored")
  writer = workdir_files.MetricWriter(workdir, start)
  stopper = early_stopping.EarlyStopping(tc, writer.kept)  # its count, as the resumed run left it
  end = start if stopper.should_stop else tc.num_steps
  if restored is not None and (start % config.eval.every_steps == 0 or start == tc.num_steps):
    score = writer.dev_metric(start, best_metric)
    if score is not None and (not stopping or stopper.best_step == start):
      ckpt.repair_best(start, state, {"step": start, "data_position": start}, score)
  step_fn = jax.jit(step.make_train_step(
      model, tx, schedules.teacher_forcing_from_config(tc.teacher_forcing), tc.label_smoothing,
      loss_normalization=tc.loss_normalization,
      learning_rate=optim.learning_rate_schedule(tc)),
      in_shardings=(replicated, rows, replicated), out_shardings=(replicated, replicated),
      donate_argnums=(0,))
  rng = jax.device_put(jax.random.PRNGKey(config.seed), replicated)
  progress = workdir_files.Progress(tc.num_steps, start)
  t_start, interval, t_interval = time.time(), [], time.time()
  dev, untimed = None, 0.0
  with StopSignals() as stop:  # Ctrl-C and SIGTERM end the run at a step boundary
    for i in range(start, end):
      if stop.signum is not None:
        ckpt.wait()  # a save in flight completes; then the process may end
        saved = ckpt.last.latest_step()
        writer.close()
        ckpt.close()
        raise RunInterrupted(stop.signum, i, saved)
      state, metrics = step_fn(state, parallel.global_batch(batches(i, my_rows), rows), rng)
      interval.append(metrics)
      done = i + 1
      if i == start:  # compiled (or read from the cache) on the first call: not training time
        jax.block_until_ready(metrics)
        log.info("compiled the training step and ran step %d in %.1f s", done,
                 time.time() - t_interval)
        untimed, t_interval = float(metrics["num_tokens"]), time.time()
        progress.restart(done)
      if done % tc.log_every_steps == 0 or done == tc.num_steps:
        stats = parallel.to_host(interval)
        record = train_record(stats, done, time.time() - t_interval, untimed)
        if not np.isfinite(record["loss"]):
          raise FloatingPointError(nonfinite_message(stats, done, ckpt, workdir))
        writer.write(record)
        faults.point("train_record", done)
        progress.update(done, record)
        interval, t_interval, untimed = [], time.time(), 0.0
      is_eval = done % config.eval.every_steps == 0 or done == tc.num_steps
      should_stop = offer_best = False
      if is_eval:
        dev = _evaluate_and_record(config, model, state.params, dataset, "dev", done, writer,
                                   workdir, "final_dev" if done == tc.num_steps else f"{done:07d}",
                                   mesh)
        faults.point("dev_record", done)
        m = dev["metrics"]
        worst = min(dev["exact_match_by_length"], key=lambda r: r["exact_match"])
        progress.message(f"step {done}: dev loss {m['loss']:.4f} BLEU {m['bleu']:.2f} "
                         f"chrF {m['chrf']:.2f} exact match {m['exact_match']:.4f} (lowest "
                         f"by source length: {worst['exact_match']:.4f} at {worst['bucket']})")
        should_stop = stopper.update(done, m)
        offer_best = not stopping or stopper.best_step == done  # only improvements count
      if is_eval or done % tc.checkpoint_every_steps == 0:
        ckpt.save(done, state, {"step": done, "data_position": done},
                  score=dev["metrics"][best_metric] if offer_best else None)
        faults.point("saving", done)
        t_interval = time.time()  # tokens_per_s counts training time only
      if should_stop:
        end = done
        progress.message(f"step {done}: {stopper.reason()}")
        break
  ckpt.wait()
  ending = {"step": end, "model_step": end, "reason": "num_steps"}
  if stopper.should_stop:  # the final evaluation is of the best model (best/ keeps it)
    state, meta = ckpt.restore("best", state)
    state = jax.device_put(state, replicated)
    ending.update(model_step=int(meta["step"]), reason=f"{stopper.reason()}; stopped at step "
                  f"{end}, evaluating the model of step {int(meta['step'])}")
    dev = None
    if parallel.is_primary() and ending["model_step"] != tc.num_steps:
      _plots_as_final(workdir, ending["model_step"])
  if dev is None:  # resumed after the last step, or the best model: dev is already recorded
    dev = evaluate.evaluate(model, state.params, dataset, "dev", config.eval, mesh=mesh)
  results = {"dev": dev, "test": _evaluate_and_record(
      config, model, state.params, dataset, "test", ending["model_step"], writer, workdir,
      "final_test", mesh)}
  faults.point("test_record")
  write_outputs(workdir, config, model, results, time.time() - t_start, ending)
  faults.point("outputs")
  log.info("done at step %d: %s; report: %s", end, "; ".join(
      f"{split} BLEU {r['metrics']['bleu']:.2f} exact match {r['metrics']['exact_match']:.4f}"
      for split, r in results.items()), workdir / "report.md")
  writer.close()
  ckpt.close()
  return results
