"""A 4-member stack for the tests: one model shape, members differing in seed,
learning rate, clip norm, label smoothing and teacher-forcing schedule.

`nan`: member 2's learning rate (1e38) makes its loss NaN after one update.
`without_nan`: the same sweep without member 2.
"""

from pathlib import Path

from seq2seq_jax.config_utils import load_module


def get_config(arg=None):
  config = load_module(Path(__file__).resolve().parents[2] / "configs" / "default.py"
                       ).get_config("quick")
  config.train.num_steps = 60
  config.train.log_every_steps = 5
  config.eval.every_steps = 30
  config.train.checkpoint_every_steps = 10
  return config


def get_sweep(arg=None):
  tf = "train.teacher_forcing."
  members = [
      {"seed": 0, "train.learning_rate": 3e-3},
      {"seed": 1, "train.learning_rate": 2e-3, "train.label_smoothing": 0.1,
       tf + "schedule": "linear", tf + "k": 1.0, tf + "c": 0.01, tf + "eps_min": 0.3},
      {"seed": 2, "train.learning_rate": 1e38},
      {"seed": 3, "train.learning_rate": 1e-3, "train.clip_norm": 1.0,
       tf + "schedule": "exponential", tf + "k": 0.98},
  ]
  if arg != "nan":
    members[2]["train.learning_rate"] = 5e-3
  if arg == "without_nan":
    del members[2]
  return members
