"""Bahdanau et al. 2015, figure 2: attention keeps BLEU up on long sentences.

    python -m seq2seq_jax.sweep --config=experiments/attention_by_length/config.py \
        --workdir=workdirs/attention_by_length

English -> Spanish Bible verses (`debian:en-es`), the same bidirectional LSTM
encoder-decoder without attention (RNNencdec), with Bahdanau's additive score
(RNNsearch) and with Luong's dot score, three seeds each; BLEU by source length
in the summary. (Dot attention was the first run's choice, when learned scores
still collapsed onto the sentence-final token; the parity fix of
`experiments/parity/` ended that, and the additive arm was added.) Hidden size
128, training pairs of up to 60 pieces, 4000 steps (issue 14's re-run at twice
the first budget; the 2000-step sweep of the first report is `:budget2000`).
"""

from pathlib import Path

from seq2seq_jax import config_utils, hyper

base = config_utils.load_module(Path(__file__).resolve().parent.parent / "base.py")


def get_config(arg=None):
  steps = 2000 if arg == "budget2000" else 4000
  config = base.translation_config("debian:en-es", num_steps=steps, hidden_dim=128, max_len=60)
  return config_utils.make_quick(config) if arg == "quick" else config


def get_sweep(arg=None):
  return hyper.product([hyper.sweep("model.attention", ["none", "additive", "dot"]),
                        hyper.sweep("seed", [0, 1, 2])])
