"""Trains and evaluates a config in a workdir; running it again resumes.

    python -m seq2seq_jax.main --config=configs/default.py --workdir=DIR \
        [--config.model.cell=gru ...] [--config_mismatch=allow]
"""

import logging
import sys

from absl import flags
from ml_collections import config_flags

from seq2seq_jax.cli import fail as _fail
from seq2seq_jax.cli import parse_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file "
                                          "(`configs/NAME.py[:ARG]`).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
_MISMATCH = flags.DEFINE_enum("config_mismatch", "error", ["error", "allow"],
                              "What to do when the workdir holds a run with another config.")


def main(argv) -> None:
  config = parse_flags(argv, _CONFIG)
  from seq2seq_jax import config_utils, train
  try:
    config_utils.validate(config)
  except ValueError as e:
    _fail(str(e))
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                      datefmt="%H:%M:%S")
  logging.getLogger("seq2seq_jax").setLevel(logging.INFO)  # orbax's INFO lines stay quiet
  logging.getLogger("seq2seq_jax").info("config:\n%s", config)
  from seq2seq_jax.checkpoints import CheckpointError
  try:
    train.train_and_evaluate(config, _WORKDIR.value, _MISMATCH.value)
  except (ValueError, FloatingPointError, CheckpointError) as e:
    _fail(str(e))  # a differing workdir config, a NaN loss, no readable checkpoint


if __name__ == "__main__":
  main(sys.argv)
