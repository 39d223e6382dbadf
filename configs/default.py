"""The default experiment: English number words -> German, attention LSTM.

    python -m seq2seq_jax.main --config=configs/default.py --workdir=/tmp/num2words
    python -m seq2seq_jax.main --config=configs/default.py:quick --workdir=/tmp/quick

German puts the units before the tens ("forty-two" -> "zweiundvierzig"), so
the attention maps show the reordering. Source words, target characters.

`base_config()` is every field a run can have at its default (the defaults, their
types and meanings are written once, in `seq2seq_jax/config_schema.py`; other
configs start from it); `get_config()` is the demo:
that plus its recipe, evaluated every 250 steps and stopped once dev exact match
has not improved in two evaluations (measured in the README).
"""

from seq2seq_jax import config_schema, config_utils


def base_config():
  """Every field at its default (seq2seq_jax/config_schema.py says what each means;
  `python -m seq2seq_jax.main --config_help` prints them)."""
  return config_schema.config_dict()


def get_config(arg=None):
  config = base_config()
  # The demo's recipe: dev exact match reaches 1.0 at step 500 (README) and then
  # cannot improve, so two evaluations later training ends (the cap: 3,000 steps).
  config.train.log_every_steps = 50
  config.eval.every_steps = 250
  config.train.early_stopping.patience = 2
  config.train.early_stopping.metric = "exact_match"
  if arg == "quick":
    config_utils.make_quick(config, {
        "model.attention_dim": 0, "eval.max_examples": 0, "train.num_steps": 60,
        "train.batch_size": 32, "train.checkpoint_every_steps": 20, "eval.every_steps": 30,
        "eval.batch_size": 100})
    # The tests' 60 steps, whole (early stopping has its own tests).
    config.train.early_stopping.patience = 0
  elif arg:
    raise ValueError(f"configs/default.py: unknown argument {arg!r}; valid: quick")
  return config
