r"""Trains and evaluates a config in a workdir; running it again resumes.

    python -m seq2seq_jax.main --config=configs/default.py --workdir=DIR \
        [--config.model.cell=gru ...] [--config_mismatch=allow]

One of several processes of a run (README, "Several devices and hosts"): under
`srun`, Open MPI or on a TPU slice JAX finds the others itself; by hand, give each
process `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
"""

import logging
import sys

from absl import flags
import jax  # (imported by config_checks already: costs nothing here)
from ml_collections import config_flags

from seq2seq_jax import cli, config_checks
from seq2seq_jax.cli import fail as _fail
from seq2seq_jax.cli import parse_flags, start_processes

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file "
                                          "(`configs/NAME.py[:ARG]`).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
_MISMATCH = flags.DEFINE_enum("config_mismatch", "error", ["error", "allow"],
                              "What to do when the workdir holds a run with another config.")
flags.DEFINE_string("coordinator_address", None, "Multi-process runs started by hand: "
                    "HOST:PORT of process 0 (jax.distributed).")
flags.DEFINE_integer("num_processes", None, "Multi-process runs started by hand: how many.")
flags.DEFINE_integer("process_id", None, "Multi-process runs started by hand: this one's "
                     "index, 0 to num_processes - 1.")


def main(argv) -> None:
  config = parse_flags(argv, _CONFIG)
  try:
    config = config_checks.validate(config)  # the typed config (config_schema.Config)
  except ValueError as e:
    _fail(str(e))
  start_processes()
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                      datefmt="%H:%M:%S")
  logging.getLogger("seq2seq_jax").setLevel(logging.INFO)  # orbax's INFO lines stay quiet
  cli.interrupt_on_sigterm()
  try:
    # Imported after the checks: the loop's imports (orbax 0.8 s and more)
    # would delay every config error line from 0.6 s to 2.0 s (measured, 2-core EPYC).
    from seq2seq_jax.training import checkpoints, run
    run.train_and_evaluate(config, _WORKDIR.value, _MISMATCH.value)
  except KeyboardInterrupt as e:  # in the loop: at a step boundary (signals.RunInterrupted)
    cli.fail_interrupted(e, "outside the training steps (loading, compiling or the final "
                         "evaluation); files are written whole: the same command resumes "
                         "from the last checkpoint")
  except (ValueError, FloatingPointError, OSError, checkpoints.CheckpointError) as e:
    _fail(cli.os_error_line(e))  # another config, a NaN loss, a missing file, no checkpoint
  except jax.errors.JaxRuntimeError as e:
    if "out of memory" not in str(e).lower() and "RESOURCE_EXHAUSTED" not in str(e):
      raise
    _fail(f"the device ran out of memory ({str(e).splitlines()[0][-100:]}): make the model or "
          "train.batch_size smaller (a workdir that has checkpoints takes another config with "
          "--config_mismatch=allow)")


if __name__ == "__main__":
  main(sys.argv)
