"""Transformer (Vaswani 2017) against the attention LSTM at an equal wall-clock budget.

    python -m seq2seq_jax.sweep --config=experiments/transformer_vs_lstm/config.py \
        --workdir=workdirs/transformer_vs_lstm --parallel=2

German -> English (`debian:de-en`, sentencepiece 8000 a side): the attention
LSTM of `configs/deen_attention.py` (bidirectional, general attention, input
feeding, 256 units, its recipe: constant 2e-3, loss per sentence, clip 5) and
the `small` Transformer of `configs/deen_transformer.py` (d_model 256, 4 heads,
feed-forward 1024, 3 + 3 layers, its recipe: rsqrt schedule with a peak of 1e-3,
here after 400 warmup steps (1000 in the config, for 8000 steps), Adam
0.9/0.98/1e-9, loss per token, clip 1), three seeds each. The LSTM trains 3000
steps, the Transformer 1800, four evaluations each (greedy, BLEU by source
length). A Transformer step takes 2.1x an LSTM step on these batches
(`step_time.py`, side by side), so the LSTM's 3000 steps buy the Transformer
1420: its evaluation at step 1350 is the equal-budget point, 1800 is 1.27x the
LSTM's training time.
"""

from pathlib import Path

from seq2seq_jax import config_utils, hyper

ROOT = Path(__file__).resolve().parent.parent.parent
deen_transformer = config_utils.load_module(ROOT / "configs" / "deen_transformer.py")
deen_attention = config_utils.load_module(ROOT / "configs" / "deen_attention.py")

# The fields in which the two recipes differ, LSTM first; everything else is the
# Transformer config's (data, label smoothing 0.1, batch 64, evaluation).
ARMS = {
    "model.family": ("rnn", "transformer"),
    "model.dropout": (0.2, 0.1),
    "train.num_steps": (3000, 1800),
    "train.learning_rate": (2e-3, 1e-3),
    "train.lr_schedule": ("constant", "rsqrt"),
    "train.warmup_steps": (0, 400),
    "train.adam_b2": (0.999, 0.98),
    "train.adam_eps": (1e-8, 1e-9),
    "train.clip_norm": (5.0, 1.0),
    "train.loss_normalization": ("sentences", "tokens"),
    "eval.every_steps": (750, 450),
    "train.checkpoint_every_steps": (750, 450),
}


def get_config(arg=None):
  config = deen_transformer.get_config()
  config.model.norm = "post"  # as swept (deen_transformer.py has defaulted to pre since)
  config.eval.num_attention_plots = 2
  config.train.log_every_steps = 50
  lstm = deen_attention.get_config()
  for field in ("cell", "attention", "bidirectional", "input_feeding", "embed_dim",
                "hidden_dim"):
    assert config.model[field] == lstm.model[field], field  # the LSTM arm is deen_attention's
  if arg == "quick":
    config_utils.make_quick(config, {"train.warmup_steps": 5})
  return config


def get_sweep(arg=None):
  if arg == "quick":  # the arms' recipes at the quick config's size
    arms = {f: v for f, v in ARMS.items() if not f.endswith("_steps")}
    return hyper.product([hyper.zipit([hyper.sweep(f, v) for f, v in arms.items()]),
                          hyper.sweep("seed", [0, 1])])
  return hyper.product([hyper.zipit([hyper.sweep(f, v) for f, v in ARMS.items()]),
                        hyper.sweep("seed", [0, 1, 2])])
