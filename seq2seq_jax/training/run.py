"""The training step: a pure, jitted `train_step(state, batch, rng)`."""

import json
import logging
import math
from pathlib import Path
import subprocess
import sys
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from seq2seq_jax import losses, models, schedules
from seq2seq_jax.tokens import PAD_ID

log = logging.getLogger(__name__)


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(learning_rate: float = 1e-3, clip_norm: float = 5.0,
                   optimizer: str = "adam") -> optax.GradientTransformation:
  """Global-norm gradient clipping, then Adam or SGD."""
  optimizers = {"adam": optax.adam, "sgd": optax.sgd}
  if optimizer not in optimizers:
    raise ValueError(f"unknown train.optimizer {optimizer!r}; valid optimizers: "
                     f"{', '.join(optimizers)}")
  chain = [optimizers[optimizer](learning_rate)]
  if clip_norm:
    chain.insert(0, optax.clip_by_global_norm(clip_norm))
  return optax.chain(*chain)


def init_state(model, tx, rng: jax.Array, batch: dict) -> TrainState:
  params = model.init({"params": rng}, batch["src"], batch["tgt"])["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params))


LOSS_NORMALIZATIONS = ("sentences", "tokens")


def check_loss_normalization(normalization: str) -> None:
  if normalization not in LOSS_NORMALIZATIONS:
    raise ValueError(f"train.loss_normalization={normalization!r} is not valid; valid "
                     f"choices: {', '.join(LOSS_NORMALIZATIONS)}")


def loss_and_metrics(params, model, batch: dict, tf_prob, rng: jax.Array,
                     train: bool, label_smoothing: float = 0.0,
                     normalization: str = "sentences"):
  """The training objective of one batch, and its metrics.

  The objective is the summed token loss divided by the number of sentences
  (`normalization="sentences"`, the RNN recipe of tensorflow/nmt, OpenNMT-py and
  JoeyNMT) or of target tokens (`"tokens"`). The metrics' `loss` is always the
  mean token loss. Plain teacher forcing (`tf_prob=None`) leaves the output
  projection to `losses.projected_cross_entropy`, which fuses it with the loss.
  """
  check_loss_normalization(normalization)
  k_dropout, k_tf = jax.random.split(rng)
  fused = tf_prob is None
  out = model.apply({"params": params}, batch["src"], batch["tgt"], tf_prob=tf_prob,
                    rng=k_tf, train=train, rngs={"dropout": k_dropout}, project=not fused)
  tgt = batch["tgt"]
  if fused:
    dtype = models.DTYPES[model.dtype]
    features = out["features"]
    token_loss, correct = losses.projected_cross_entropy(
        features.reshape(-1, features.shape[-1]), params["decoder"]["out_w"].astype(dtype),
        params["decoder"]["out_b"].astype(dtype),
        tgt.reshape(-1), label_smoothing)
    mask = (tgt.reshape(-1) != PAD_ID).astype(jnp.float32)
    ce = {"loss_sum": jnp.sum(token_loss * mask), "num_tokens": jnp.sum(mask),
          "num_correct": jnp.sum(correct * mask)}
  else:
    ce = losses.masked_cross_entropy(out["logits"], tgt, label_smoothing)
  num = jnp.maximum(ce["num_tokens"], 1.0)
  metrics = {"loss": ce["loss_sum"] / num, "token_accuracy": ce["num_correct"] / num,
             "num_tokens": ce["num_tokens"], "tf_ratio": out["gold_fraction"]}
  if normalization == "tokens":
    return metrics["loss"], metrics
  # Bucket filler rows (all padding) are not sentences.
  sentences = jnp.sum(jnp.any(tgt != PAD_ID, axis=1).astype(jnp.float32))
  return ce["loss_sum"] / jnp.maximum(sentences, 1.0), metrics


def make_train_step(model, tx: optax.GradientTransformation,
                    teacher_forcing: Callable | None = None,
                    label_smoothing: float = 0.0, jit: bool = True,
                    loss_normalization: str = "sentences"):
  """Builds `train_step(state, batch, rng) -> (state, metrics)`.

  Args:
    model: a `Seq2Seq`.
    tx: the optimizer.
    teacher_forcing: `step -> probability` (see `schedules`), or None for
      plain teacher forcing, which needs no per-step sampling at all.
    label_smoothing: for the cross-entropy.
    jit: compile it, donating the state.
    loss_normalization: "sentences" or "tokens", see `loss_and_metrics`.
  """
  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    tf_prob = None if teacher_forcing is None else teacher_forcing(state.step)
    grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, model, batch, tf_prob, rng, True,
                                  label_smoothing, loss_normalization)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if tf_prob is not None:
      metrics["tf_prob"] = tf_prob
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jax.jit(train_step, donate_argnums=(0,)) if jit else train_step


def teacher_forcing_from_config(tf_config) -> Callable | None:
  """The schedule of a `train.teacher_forcing` config section (None: always 1)."""
  params = dict(tf_config)
  name = params.pop("schedule")
  if schedules.is_always_teacher_forced(name, **params):
    return None
  return schedules.make_schedule(name, **params)


# ----- the training loop -----

TIMING_FIELDS = ("tokens_per_s", "wall_s")  # the only metrics that differ between identical runs


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
    from tensorboardX import SummaryWriter
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


def _environment() -> dict:
  import importlib.metadata as md
  env = {"python": sys.version.split()[0], "platform": jax.devices()[0].platform}
  for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections",
              "numpy", "sacrebleu"):
    try:
      env[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      env[pkg] = None
  try:
    root = Path(__file__).resolve().parent.parent
    env["git_revision"] = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
        timeout=10).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    env["git_revision"] = None
  return env


def _prepare_workdir(config, workdir: Path, config_mismatch: str) -> None:
  from seq2seq_jax import config_utils
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
  (workdir / "environment.json").write_text(json.dumps(_environment(), indent=2) + "\n")


def _load_data(config, workdir: Path):
  from seq2seq_jax import data
  from seq2seq_jax.data.vocab import load_vocab
  src_path, tgt_path = workdir / "vocab_src.json", workdir / "vocab_tgt.json"
  if src_path.exists() and tgt_path.exists():
    dataset = data.load(config.dataset, load_vocab(src_path), load_vocab(tgt_path))
  else:
    dataset = data.load(config.dataset)
    dataset.src_vocab.save(src_path)
    dataset.tgt_vocab.save(tgt_path)
  return dataset


def _evaluate_and_record(config, model, params, dataset, split, step, writer, workdir,
                         plots_prefix):
  from seq2seq_jax import evaluate
  result = evaluate.evaluate(model, params, dataset, split, config.eval)
  record = {"step": step, "split": split, **result["metrics"],
            "bleu_by_length": result["bleu_by_length"]}
  writer.write(record)
  if result["attention"] is not None and config.eval.num_attention_plots:
    (workdir / "attention").mkdir(exist_ok=True)
    src_ids = dataset.arrays[split][0]
    for i in range(min(config.eval.num_attention_plots, len(src_ids))):
      src_tokens = dataset.src_vocab.tokens(src_ids[i])
      out_tokens = dataset.tgt_vocab.tokens(result["output_ids"][i]) + ["<eos>"]
      evaluate.plot_attention(result["attention"][i], src_tokens, out_tokens,
                              workdir / "attention" / f"{plots_prefix}_{i}.png",
                              title=f"step {step}: {result['hypotheses'][i]}")
  return result


def _write_report(workdir: Path, config, results: dict, step: int, wall: float) -> None:
  lines = [f"# {config.dataset.name}: {config.model.cell}, attention {config.model.attention}",
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
  plots = sorted((workdir / "attention").glob("final_*.png")) if config.model.attention != \
      "none" else []
  lines += [f"![attention {p.stem}](attention/{p.name})" for p in plots]
  (workdir / "report.md").write_text("\n".join(lines) + "\n")


def train_and_evaluate(config, workdir, config_mismatch: str = "error") -> dict:
  """Trains `config` in `workdir`, resuming from its last checkpoint.

  Returns:
    the final evaluation results by split.
  """
  from seq2seq_jax import checkpoints, config_utils, data, evaluate
  config_utils.validate(config)
  workdir = Path(workdir).resolve()
  _prepare_workdir(config, workdir, config_mismatch)
  dataset = _load_data(config, workdir)
  model = models.Seq2Seq(src_vocab_size=len(dataset.src_vocab),
                         tgt_vocab_size=len(dataset.tgt_vocab), **config.model)
  tc = config.train
  tx = make_optimizer(tc.learning_rate, tc.clip_norm, tc.optimizer)
  batches = data.TrainBatches(*dataset.arrays["train"], tc.batch_size, config.seed,
                              config.dataset.get("bucket_boundaries", ()))
  first = batches(0)
  state = init_state(model, tx, jax.random.PRNGKey(config.seed), first)
  ckpt = checkpoints.Checkpoints(workdir / "checkpoints", tc.keep_checkpoints)
  restored = ckpt.restore_latest(state)
  start = 0
  if restored is not None:
    state, meta = restored
    start = int(meta["step"])
    if meta["data_position"] != start:
      raise checkpoints.CheckpointError(f"checkpoint {start}: data position "
                                        f"{meta['data_position']} != step")
    log.info("resumed from %s at step %d", workdir / "checkpoints", start)
  writer = MetricWriter(workdir, start)
  step_fn = make_train_step(model, tx, teacher_forcing_from_config(tc.teacher_forcing),
                            tc.label_smoothing,
                            loss_normalization=tc.loss_normalization)
  rng = jax.random.PRNGKey(config.seed)
  progress = Progress(tc.num_steps, start)
  t_start, interval, t_interval = time.time(), [], time.time()
  dev = None
  for step in range(start, tc.num_steps):
    state, metrics = step_fn(state, batches(step), rng)
    interval.append(metrics)
    done = step + 1
    if done % tc.log_every_steps == 0 or done == tc.num_steps:
      stats = jax.device_get(interval)
      loss = float(np.mean([m["loss"] for m in stats]))
      if not np.isfinite(loss):
        first_bad = done - len(stats) + 1 + next(
            i for i, m in enumerate(stats) if not np.isfinite(m["loss"]))
        saved = ckpt.last.latest_step()
        raise FloatingPointError(
            f"training loss is {loss} at step {first_bad}; " +
            (f"the last checkpoint is step {saved} in {workdir / 'checkpoints' / 'last'}"
             if saved is not None else "no checkpoint was saved before it"))
      record = {"step": done, "split": "train", "loss": loss, "ppl": math.exp(min(loss, 50)),
                "token_accuracy": float(np.mean([m["token_accuracy"] for m in stats])),
                "grad_norm": float(np.mean([m["grad_norm"] for m in stats])),
                "tf_ratio": float(np.mean([m["tf_ratio"] for m in stats])),
                "tokens_per_s": sum(float(m["num_tokens"]) for m in stats)
                / max(time.time() - t_interval, 1e-9)}
      writer.write(record)
      progress.update(done, record)
      interval, t_interval = [], time.time()
    is_eval = done % config.eval.every_steps == 0 or done == tc.num_steps
    if is_eval:
      dev = _evaluate_and_record(config, model, state.params, dataset, "dev", done, writer,
                                 workdir, "final_dev" if done == tc.num_steps else f"{done:07d}")
      m = dev["metrics"]
      progress.message(f"step {done}: dev loss {m['loss']:.4f} BLEU {m['bleu']:.2f} "
                       f"chrF {m['chrf']:.2f} exact match {m['exact_match']:.4f}")
    if is_eval or done % tc.checkpoint_every_steps == 0:
      ckpt.save(done, state, {"step": done, "data_position": done},
                bleu=dev["metrics"]["bleu"] if is_eval else None)
      t_interval = time.time()  # tokens_per_s counts training time only
  ckpt.wait()
  if dev is None:  # resumed after the last step: its dev metrics are already recorded
    dev = evaluate.evaluate(model, state.params, dataset, "dev", config.eval)
  results = {"dev": dev, "test": _evaluate_and_record(
      config, model, state.params, dataset, "test", tc.num_steps, writer, workdir, "final_test")}
  for split, result in results.items():
    (workdir / f"predictions_{split}.txt").write_text(
        "".join(h + "\n" for h in result["hypotheses"]), encoding="utf-8")
  _write_report(workdir, config, results, tc.num_steps, time.time() - t_start)
  writer.close()
  ckpt.close()
  return results
