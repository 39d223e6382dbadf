"""Luong et al. 2015 and Britz et al. 2017: attention scores dot / general / concat / additive,
with and without input feeding.

    python -m seq2seq_jax.sweep --config=experiments/attention_scores/config.py \
        --workdir=workdirs/attention_scores

English number words -> German number words (`num2words_en_de`: German puts
the units before the tens, so the decoder must attend out of order), a small
bidirectional LSTM, each score with and without input feeding, three seeds.
"""

from pathlib import Path

from seq2seq_jax import hyper
from seq2seq_jax.config_utils import load_module

base = load_module(Path(__file__).resolve().parent.parent / "base.py")



def get_config(arg=None):
  config = base.number_words_config(1000)
  return base.make_quick(config) if arg == "quick" else config


def get_sweep(arg=None):
  return hyper.product([hyper.sweep("model.attention", ["dot", "general", "concat", "additive"]),
                        hyper.sweep("model.input_feeding", [False, True]),
                        hyper.sweep("seed", [0, 1, 2])])
