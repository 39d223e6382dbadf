"""A quick 8-member sweep for the tests: cell x attention x 2 seeds on the quick default config.

With the argument `faulty`, member 1 reads a corpus that does not exist (it
raises), member 2 trains with a learning rate that makes the loss NaN, and
member 5 trains for 300 steps (long enough to be killed in the middle).
With `badfield`, member 0 sets a field that does not exist.
"""

from pathlib import Path

from seq2seq_jax import hyper
from seq2seq_jax.config_utils import load_module


def get_config(arg=None):
  config = load_module(Path(__file__).resolve().parents[2] / "configs" / "default.py"
                       ).get_config("quick")
  config.train.num_steps = 40
  config.eval.every_steps = 20
  config.train.checkpoint_every_steps = 10
  return config


def get_sweep(arg=None):
  members = hyper.product([hyper.sweep("model.cell", ["lstm", "gru"]),
                           hyper.sweep("model.attention", ["none", "dot"]),
                           hyper.sweep("seed", [0, 1])])
  if arg == "faulty":
    members[1]["dataset.name"] = "tsv:/nonexistent/corpus.tsv"
    members[2].update({"train.optimizer": "sgd", "train.learning_rate": 1e38,
                       "train.clip_norm": 0.0})
    members[5]["train.num_steps"] = 300
  elif arg == "badfield":
    members[0]["model.cel"] = "gru"
  return members
