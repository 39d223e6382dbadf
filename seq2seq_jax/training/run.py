"""A solo run: `train_and_evaluate(config, workdir)`, resuming from the workdir.

A solo run is a stack of one member (`training.loop.train_members`): the same
loop, files and numbers as a stacked sweep member's.
"""

from seq2seq_jax.training import loop


def train_and_evaluate(config, workdir, config_mismatch: str = "error") -> dict:
  """Trains `config` (checked by the entry point: `config_checks.validate`) in
  `workdir`, resuming from its last checkpoint.

  Returns:
    the final evaluation results by split.
  """
  return loop.train_members([config], [workdir], config_mismatch=config_mismatch)[0]
