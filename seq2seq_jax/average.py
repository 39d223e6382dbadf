r"""Averages the parameters of a run's last N checkpoints (Vaswani et al. 2017: the
last 5 for base models), saves them as `checkpoints/average/<newest step>`, and
evaluates them on dev and test into `report.md`.

    python -m seq2seq_jax.average --workdir=DIR [--last=5]
    python -m seq2seq_jax.translate --workdir=DIR --checkpoint=average < in.txt

The average covers the checkpoints `last/` holds (`train.keep_checkpoints` of
them); the optimizer state kept with it is the newest checkpoint's, so `average/`
is for decoding, not for resuming. Running it again replaces the average.
"""

import logging
from pathlib import Path
import sys

from absl import flags
import jax
import numpy as np

from seq2seq_jax import cli, data, evaluate, files
from seq2seq_jax.training import checkpoints, trained
from seq2seq_jax.training import workdir as workdir_files

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_LAST = flags.DEFINE_integer("last", None, "Average the newest N checkpoints of last/ (default: "
                             "5, or all it holds if fewer).")

log = logging.getLogger(__name__)
REPORT_HEADING = "## Average of the last"


def average_params(trees: list):
  """The mean of parameter trees, accumulated in float64, in each leaf's dtype."""
  return jax.tree.map(lambda *xs: (sum(np.asarray(x, np.float64) for x in xs) / len(xs))
                      .astype(np.asarray(xs[0]).dtype), *trees)


def average(workdir: Path, last: int | None = None) -> tuple[list[int], dict]:
  """Writes the average of the newest `last` checkpoints (None: 5, or all there are if
  fewer); returns their steps and the dev / test evaluation of the average."""
  held = [p for p in (workdir / "checkpoints" / "last").glob("*") if p.name.isdigit()]
  if held and last is None:
    last = min(5, len(held))
  if held and not 1 <= last <= len(held):  # before the model loads (a minute for a big one)
    raise ValueError(f"--last={last}: {workdir / 'checkpoints' / 'last'} holds {len(held)} "
                     f"checkpoints: give --last between 1 and {len(held)}")
  config, model, _, src_vocab, tgt_vocab = trained.load_model(workdir, "last")
  template = trained.state_template(config, model)
  ckpt = checkpoints.Checkpoints(workdir / "checkpoints", config.train.keep_checkpoints,
                                 create=False)
  try:
    steps = sorted(ckpt.last.all_steps())
    if not 1 <= last <= len(steps):
      raise ValueError(f"--last={last}: {ckpt.directory / 'last'} holds {len(steps)} checkpoints "
                       f"(steps {steps}; train.keep_checkpoints={config.train.keep_checkpoints}"
                       f"): give --last between 1 and {len(steps)}")
    steps = steps[-last:]
    states = [ckpt.restore(str(s), template)[0] for s in steps]
    average = average_params([s.served for s in states])  # a run's moving averages, if kept
    state = states[-1].with_served(average)
    ckpt.save_average(steps[-1], state, {"step": steps[-1], "data_position": steps[-1],
                                         "averaged_steps": steps})
  finally:
    ckpt.close()
  log.info("averaged checkpoints %s into %s", steps, ckpt.directory / "average" / str(steps[-1]))
  dataset = data.load(config.dataset, src_vocab, tgt_vocab)
  results = {split: evaluate.evaluate(model, state.served, dataset, split, config.eval)
             for split in ("dev", "test")}
  _add_to_report(workdir / "report.md", steps, results)
  return steps, results


def _add_to_report(path: Path, steps: list[int], results: dict) -> None:
  """Appends (or replaces) the report's section of the averaged checkpoint."""
  text = path.read_text(encoding="utf-8") if path.exists() else ""
  text = text.split(f"\n{REPORT_HEADING}")[0].rstrip("\n") + "\n"
  rows = [f"\n{REPORT_HEADING} {len(steps)} checkpoints (steps {', '.join(map(str, steps))})",
          "", "`--checkpoint=average`; the same evaluation as above.", "",
          *workdir_files.metrics_table(results)]
  files.write_atomically(path, text + "\n".join(rows) + "\n")


def main(argv) -> None:
  cli.parse_workdir_flags(argv, _WORKDIR, logging.INFO)
  try:
    steps, results = average(Path(_WORKDIR.value), _LAST.value)
  except KeyboardInterrupt as e:
    cli.fail_interrupted(e, "before the average was saved whole")
  except (checkpoints.CheckpointError, ValueError, OSError) as e:
    cli.fail(e)
  dev, test = results["dev"]["metrics"], results["test"]["metrics"]
  print(f"average of steps {steps}: dev BLEU {dev['bleu']:.2f} exact match "
        f"{dev['exact_match']:.4f}; test BLEU {test['bleu']:.2f} exact match "
        f"{test['exact_match']:.4f}; report: {Path(_WORKDIR.value) / 'report.md'}")


if __name__ == "__main__":
  main(sys.argv)
