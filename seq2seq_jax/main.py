"""Trains and evaluates a config in a workdir; running it again resumes.

    python -m seq2seq_jax.main --config=configs/default.py --workdir=DIR \
        [--config.model.cell=gru ...] [--config_mismatch=allow]
"""

import logging
import sys

from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file "
                                          "(`configs/NAME.py[:ARG]`).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
_MISMATCH = flags.DEFINE_enum("config_mismatch", "error", ["error", "allow"],
                              "What to do when the workdir holds a run with another config.")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv) -> None:
  try:
    flags.FLAGS(argv)
    config = _CONFIG.value
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:  # an unknown field, with ml_collections' hint
    _fail(f"unknown config field in {[a for a in argv[1:] if a.startswith('--config.')]}: "
          + " ".join(str(e).replace("\\n", " ").strip("'\"").split()))
  except (OSError, ValueError, TypeError) as e:
    _fail(" ".join(str(e).split()))
  if config is None or not _WORKDIR.value:
    _fail("--config and --workdir are required")
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
