"""Bengio et al. 2015: scheduled sampling against always teacher forcing and always sampling.

    python -m seq2seq_jax.sweep --config=experiments/scheduled_sampling/config.py \
        --workdir=workdirs/scheduled_sampling

English number words -> German number words (`num2words_en_de`, character
targets of up to 53 characters, so a decoder that has only seen gold prefixes
meets its own mistakes at test time). The probability of feeding the gold
token: 1 (teacher forcing), 0 (always the model's own sample), or decaying
over training as Bengio's linear, exponential and inverse sigmoid schedules;
fed-back tokens are sampled from the model, as in the paper. Three seeds each.
"""

from pathlib import Path

from seq2seq_jax import hyper
from seq2seq_jax.config_utils import load_module

base = load_module(Path(__file__).resolve().parent.parent / "base.py")

STEPS = 2000


def get_config(arg=None):
  config = base.number_words_config(STEPS)
  config.model.predictions = "sample"  # Bengio feeds back samples from the model
  return base.make_quick(config) if arg == "quick" else config


def get_sweep(arg=None):
  tf = "train.teacher_forcing."
  schedules = [
      {tf + "schedule": "constant", tf + "ratio": 1.0},
      {tf + "schedule": "constant", tf + "ratio": 0.0},
      # linear: from 1 down to 0.25 at the end of training
      {tf + "schedule": "linear", tf + "k": 1.0, tf + "c": 0.75 / STEPS, tf + "eps_min": 0.25},
      # exponential: k**i reaches 0.25 at the end (0.9993**2000 = 0.246)
      {tf + "schedule": "exponential", tf + "k": 0.9993},
      # inverse sigmoid: k / (k + exp(i/k)) passes 0.5 at i = k ln k = 633, 0.15 at 1000
      {tf + "schedule": "inverse_sigmoid", tf + "k": 130.0},
  ]
  return hyper.product([schedules, hyper.sweep("seed", [0, 1, 2])])
