"""Bahdanau et al. 2015, figure 2: attention keeps BLEU up on long sentences.

    python -m seq2seq_jax.sweep --config=experiments/attention_by_length/config.py \
        --workdir=workdirs/attention_by_length

English -> Spanish Bible verses (`debian:en-es`), the same bidirectional LSTM
encoder-decoder without attention (RNNencdec) and with additive attention
(RNNsearch), three seeds each; BLEU by source length in the summary.
"""

from pathlib import Path

from seq2seq_jax import hyper
from seq2seq_jax.config_utils import load_module

base = load_module(Path(__file__).resolve().parent.parent / "base.py")


def get_config(arg=None):
  config = base.translation_config("debian:en-es", num_steps=4000)
  return base.make_quick(config) if arg == "quick" else config


def get_sweep(arg=None):
  return hyper.product([hyper.sweep("model.attention", ["none", "additive"]),
                        hyper.sweep("seed", [0, 1, 2])])
