"""Learning parity with JoeyNMT: `configs/deen_attention.py`'s model for 2000 updates.

    python -m seq2seq_jax.sweep --config=experiments/parity/config.py \
        --workdir=workdirs/parity --parallel=2

German -> English (`debian:de-en`, sentencepiece 8000 a side), bidirectional LSTM
encoder (128 units a direction), LSTM decoder 256, Luong `general` attention, input
feeding, dropout 0.2, Adam 2e-3, clip 5, label smoothing 0.1, batch 64; dev BLEU
(greedy) every 500 updates, three seeds. `joeynmt_export.py` writes the same data,
sentencepiece models and model for JoeyNMT 2.3; `compare.py` puts the two side by side.
"""

from pathlib import Path

from seq2seq_jax import hyper
from seq2seq_jax.config_utils import load_module

ROOT = Path(__file__).resolve().parent.parent.parent
deen_attention = load_module(ROOT / "configs" / "deen_attention.py")


def get_config(arg=None):
  config = deen_attention.get_config("quick" if arg == "quick" else None)
  if arg != "quick":
    config.train.num_steps = 2000
    config.eval.every_steps = 500
  return config


def get_sweep(arg=None):
  return hyper.sweep("seed", [0, 1, 2])
