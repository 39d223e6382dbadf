"""Bahdanau et al. 2015, figure 2: attention keeps BLEU up on long sentences.

    python -m seq2seq_jax.sweep --config=experiments/attention_by_length/config.py \
        --workdir=workdirs/attention_by_length

English -> Spanish Bible verses (`debian:en-es`), the same bidirectional LSTM
encoder-decoder without attention (RNNencdec) and with attention, three seeds
each; BLEU by source length in the summary. Dot attention rather than
Bahdanau's additive score: with this bidirectional encoder, learned scores
(additive, general) collapsed onto the sentence-final token on real text in
500-step probes, dot attention did not (see the report). Hidden size 128,
training pairs of up to 60 pieces, 2000 steps: six members within 90 minutes.
"""

from pathlib import Path

from seq2seq_jax import hyper
from seq2seq_jax.config_utils import load_module

base = load_module(Path(__file__).resolve().parent.parent / "base.py")


def get_config(arg=None):
  config = base.translation_config("debian:en-es", num_steps=2000, hidden_dim=128, max_len=60)
  return base.make_quick(config) if arg == "quick" else config


def get_sweep(arg=None):
  return hyper.product([hyper.sweep("model.attention", ["none", "dot"]),
                        hyper.sweep("seed", [0, 1, 2])])
