"""A trained run read back from its workdir: config, model, parameters and
vocabularies (for `translate`, `average` and analysis scripts)."""

import logging
from pathlib import Path

import jax
import numpy as np

from seq2seq_jax import config_schema, models
from seq2seq_jax.data.vocab import load_vocab
from seq2seq_jax.training import checkpoints, optim, step

log = logging.getLogger(__name__)


def state_template(config, model):
  """A training state of the workdir's shapes, for orbax to restore into."""
  dummy = {"src": np.ones((1, 2), np.int32), "tgt": np.ones((1, 2), np.int32)}
  return step.init_state(model, optim.optimizer_from_config(config.train),
                         jax.random.PRNGKey(0), dummy, bool(config.train.ema_decay))


def load_model(workdir, checkpoint: str = "best"):
  """The config, model, params and vocabularies of a training workdir.

  Args:
    workdir: a directory written by `seq2seq_jax.main`.
    checkpoint: "best" (by dev BLEU), "last", a step number, or "average" (written
      by `seq2seq_jax.average`); "ema" is best's moving average of the weights, which
      a run with `train.ema_decay` evaluates and every checkpoint name serves.

  Returns:
    `(config, model, params, src_vocab, tgt_vocab)`.
  """
  workdir = Path(workdir)
  for name in ("config.json", "vocab_src.json", "vocab_tgt.json"):
    if not (workdir / name).exists():
      raise ValueError(f"{workdir / name} does not exist: --workdir must be a training "
                           "workdir (python -m seq2seq_jax.main ... --workdir=DIR)")
  config = config_schema.read_saved(workdir / "config.json")
  src_vocab, tgt_vocab = load_vocab(workdir / "vocab_src.json"), load_vocab(workdir /
                                                                            "vocab_tgt.json")
  model = models.build(config.model, len(src_vocab), len(tgt_vocab))
  if checkpoint == "ema" and not config.train.ema_decay:
    raise ValueError(f"--checkpoint=ema: the run in {workdir} kept no moving average of its "
                     "weights (train.ema_decay=0): use best, last or a step")
  template = state_template(config, model)
  ckpt = checkpoints.Checkpoints(workdir / "checkpoints", 1, create=False)
  try:
    state, meta = ckpt.restore("best" if checkpoint == "ema" else checkpoint, template)
  finally:
    ckpt.close()
  log.info("loaded %s checkpoint of step %d from %s%s", checkpoint, meta["step"], workdir,
           " (its moving average of the weights)" if state.ema is not None else "")
  return config, model, state.served, src_vocab, tgt_vocab
