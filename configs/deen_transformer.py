"""German -> English on real text from Debian packages, Transformer.

    python -m seq2seq_jax.main --config=configs/deen_transformer.py --workdir=/tmp/deen_tf
    python -m seq2seq_jax.main --config=configs/deen_transformer.py:base --workdir=/tmp/base

The data and its sentencepiece vocabularies are `configs/deen_attention.py`'s
(`debian:de-en`, 8000 pieces a side, length buckets). Arguments: `small` (the
default: d_model 256, 4 heads, feed-forward 1024, 3 + 3 layers, for about
60,000 pairs on a CPU), `base` (the paper's base model: 512, 8, 2048, 6 + 6),
`quick` (tiny, for the tests). Adam (0.9, 0.98, 1e-9), linear warmup + inverse
square root to a peak of 2e-3, label smoothing 0.1, dropout 0.1, loss per target
token, pre-norm. Pre-norm and the peak are what `experiments/transformer_vs_lstm/`
found on this data: the paper's post-norm with a peak of 1e-3 reached 11.2 dev BLEU
after 1,800 steps (3 seeds), pre-norm with 2e-3 17.8 (one seed), post-norm at the
paper's formula (3.1e-3 for 400 warmup steps) stalled; `--config.model.norm=post`
gives the paper's layout.
"""

from pathlib import Path

from seq2seq_jax import config_utils

deen_attention = config_utils.load_module(Path(__file__).with_name("deen_attention.py"))

PRESETS = {
    "small": dict(d_model=256, num_heads=4, ff_dim=1024, encoder_layers=3, decoder_layers=3,
                  dropout=0.1),
    "base": dict(d_model=512, num_heads=8, ff_dim=2048, encoder_layers=6, decoder_layers=6,
                 dropout=0.1),
}


def get_config(arg=None):
  config = deen_attention.get_config()
  config.model.family = "transformer"
  config.model.update(PRESETS["base" if arg == "base" else "small"])
  config.model.attention_dropout = 0.0
  config.model.norm = "pre"
  config.model.positions = "sinusoidal"

  config.train.num_steps = 8000
  config.train.learning_rate = 2e-3  # the peak, reached at warmup_steps
  config.train.lr_schedule = "rsqrt"
  config.train.warmup_steps = 1000
  config.train.adam_b1, config.train.adam_b2, config.train.adam_eps = 0.9, 0.98, 1e-9
  config.train.clip_norm = 1.0
  config.train.label_smoothing = 0.1
  config.train.loss_normalization = "tokens"

  if arg == "quick":
    # Big enough to learn the number-words task in a few hundred steps (the tests).
    config_utils.make_quick(config, {"model.d_model": 64, "model.num_heads": 4,
                                     "model.ff_dim": 128, "train.learning_rate": 2e-3,
                                     "train.warmup_steps": 100})
  elif arg not in (None, "", "small", "base"):
    raise ValueError(f"configs/deen_transformer.py: unknown argument {arg!r}; valid: small, "
                     "base, quick")
  return config
