"""What a run writes of its training and evaluations: the `train` and evaluation
records of metrics.jsonl, the attention plots, and the outputs at its end
(predictions, report.md, finished.json). One member's files; `training.loop`
calls these for each member of a stack (a solo run is a stack of one)."""

import math
from pathlib import Path
import shutil

import numpy as np

from seq2seq_jax import evaluate, faults, parallel, plots
from seq2seq_jax.files import write_atomically
from seq2seq_jax.tokens import EOS_ID, PAD_ID
from seq2seq_jax.training import early_stopping
from seq2seq_jax.training import workdir as workdir_files


def evaluate_and_record(config, model, params, dataset, split, step_number, writer, workdir,
                         plots_prefix, mesh=None):
  result = evaluate.evaluate(model, params, dataset, split, config.eval, mesh=mesh)
  faults.point("evaluated", step_number)
  return record_evaluation(config, model, params, dataset, split, step_number, writer, workdir,
                           plots_prefix, result)


def record_evaluation(config, model, params, dataset, split, step_number, writer, workdir,
                      plots_prefix, result):
  """Writes an evaluation `result` of `params` to metrics.jsonl, with its attention plots
  (none when `plots_prefix` is None)."""
  record = {"step": step_number, "split": split, **result["metrics"],
            "bleu_by_length": result["bleu_by_length"],
            "exact_match_by_length": result["exact_match_by_length"]}
  writer.write(record)
  if (result["attention"] is not None and config.eval.num_attention_plots
      and parallel.is_primary() and plots_prefix is not None):
    (workdir / "attention").mkdir(exist_ok=True)
    src_ids = dataset.arrays[split][0]
    for i in range(min(config.eval.num_attention_plots, len(src_ids))):
      src_tokens = dataset.src_vocab.tokens(src_ids[i])
      out_tokens = plots.output_tokens(dataset.tgt_vocab, result["output_ids"][i])
      plots.plot_attention(result["attention"][i], src_tokens, out_tokens,
                              workdir / "attention" / f"{plots_prefix}_{i}.png",
                              title=f"step {step_number}, model output: "
                              f"{result['hypotheses'][i]}")
      writer.add_image(f"{split}/attention/{i}",
                       workdir / "attention" / f"{plots_prefix}_{i}.png", step_number)
    if plots_prefix.startswith("final"):  # every head of a multi-head model, once
      plot_heads(model, params, dataset, split, result, workdir / "attention" /
                  f"{plots_prefix}_heads.png", step_number)
  return result


def plot_heads(model, params, dataset, split, result, path, step_number):
  """The grid of every layer's and head's attention for the split's first sentence."""
  src_ids = dataset.arrays[split][0][0]
  out_ids = np.asarray(result["output_ids"][0])
  out_ids = out_ids[out_ids != PAD_ID]  # the output, <eos> included when it ended
  if not out_ids.size or out_ids[-1] != EOS_ID:
    out_ids = np.append(out_ids, EOS_ID)
  heads = evaluate.attention_heads(model, params, src_ids, out_ids)
  if heads is not None:
    plots.plot_attention_heads(
        heads, dataset.src_vocab.tokens(src_ids), plots.output_tokens(dataset.tgt_vocab, out_ids),
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


def plots_as_final(workdir: Path, step_number: int) -> None:
  """The dev plots of an early-stopped run's best step are its `final_dev` ones."""
  for path in sorted((workdir / "attention").glob(f"{step_number:07d}_*.png")):
    shutil.copyfile(path, path.with_name("final_dev" + path.name[7:]))
