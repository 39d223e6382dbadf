"""Bengio et al. 2015: scheduled sampling against always teacher forcing and always sampling.

    python -m seq2seq_jax.sweep --config=experiments/scheduled_sampling/config.py \
        --workdir=workdirs/scheduled_sampling

English number words -> German number words (`num2words_en_de`, numbers below
10,000, character targets), an encoder-decoder without attention (hidden size
128), as Bengio's image-captioning model had none: the decoder must carry
the whole number in its state, and a decoder that has only seen gold
prefixes meets its own mistakes at test time. The probability of feeding the
gold token: 1 (teacher forcing), 0 (always the model's own sample), or
decaying over training as Bengio's linear, exponential and inverse sigmoid
schedules; fed-back tokens are sampled from the model, as in the paper.
2000 steps, five seeds each (issue 14's re-run at twice the first budget of
1000 steps and three seeds; the schedules are stretched to the longer run:
each reaches what it reached at the end of 1000 steps at the end of 2000).
The fifteen-member 1000-step sweep of the first report is `:budget1000`.
"""

from pathlib import Path

from seq2seq_jax import config_utils, hyper

base = config_utils.load_module(Path(__file__).resolve().parent.parent / "base.py")

BUDGETS = {None: (2000, 5), "budget1000": (1000, 3)}  # arg -> (steps, seeds)


def _budget(arg):
  return BUDGETS[None if arg in (None, "quick") else arg]


def get_config(arg=None):
  steps, _ = _budget(arg)
  config = base.number_words_config(steps)
  config.model.predictions = "sample"  # Bengio feeds back samples from the model
  config.model.attention = "none"
  config.dataset.max_number = 9999
  return config_utils.make_quick(config) if arg == "quick" else config


def get_sweep(arg=None):
  steps, seeds = _budget(arg)
  long = steps == 2000
  tf = "train.teacher_forcing."
  schedules = [
      {tf + "schedule": "constant", tf + "ratio": 1.0},
      {tf + "schedule": "constant", tf + "ratio": 0.0},
      # linear: from 1 down to 0.25 at the end of training
      {tf + "schedule": "linear", tf + "k": 1.0, tf + "c": 0.75 / steps, tf + "eps_min": 0.25},
      # exponential: k**i reaches 0.25 at the end (0.9986**1000 = 0.246, 0.99931**2000 = 0.251)
      {tf + "schedule": "exponential", tf + "k": 0.99931 if long else 0.9986},
      # inverse sigmoid: k / (k + exp(i/k)) passes 0.5 at i = k ln k: 324 for k = 75 (0.09 at
      # step 500), 692 for k = 140 (0.10 at step 1000)
      {tf + "schedule": "inverse_sigmoid", tf + "k": 140.0 if long else 75.0},
  ]
  return hyper.product([schedules, hyper.sweep("seed", list(range(seeds)))])
