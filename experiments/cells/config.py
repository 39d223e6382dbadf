"""Britz et al. 2017, table 2: LSTM vs GRU vs vanilla RNN cells (22.22 / 21.78 / 15.38 BLEU).

    python -m seq2seq_jax.sweep --config=experiments/cells/config.py --workdir=workdirs/cells

German -> English (`debian:de-en`), the same bidirectional encoder-decoder
with dot attention and each cell (hidden size 128, training pairs of up to 50
pieces, 1500 steps: nine members within the 90-minute budget), three seeds each.
"""

from pathlib import Path

from seq2seq_jax import config_utils, hyper

base = config_utils.load_module(Path(__file__).resolve().parent.parent / "base.py")


def get_config(arg=None):
  config = base.translation_config("debian:de-en", num_steps=1500, hidden_dim=128, max_len=50)
  config.model.attention = "dot"
  config.train.checkpoint_every_steps = 250
  config.eval.every_steps = 500
  return config_utils.make_quick(config) if arg == "quick" else config


def get_sweep(arg=None):
  return hyper.product([hyper.sweep("model.cell", ["lstm", "gru", "rnn"]),
                        hyper.sweep("seed", [0, 1, 2])])
