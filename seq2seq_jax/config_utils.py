"""Config files: loading them, every config's `quick` form, comparing two configs, and
reading a saved one. Pure Python, so a config file that imports this loads in
milliseconds (the checks that need the model and the data are `config_checks`)."""

import importlib.util
import logging
from pathlib import Path

from seq2seq_jax import files

log = logging.getLogger(__name__)


def load_module(path):
  """A Python file loaded by path (config files, which are not in a package)."""
  path = Path(path)
  spec = importlib.util.spec_from_file_location(f"_config_{path.parent.name}_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


QUICK = {  # a tiny model, few steps, 100 dev and test sentences
    "dataset.max_number": 999,  # num2words_en_de: numbers up to 999
    "dataset.dev_size": 100,
    "dataset.test_size": 100,
    "model.embed_dim": 16,
    "model.hidden_dim": 32,
    "model.attention_dim": 16,
    "model.d_model": 32,  # the transformer family
    "model.num_heads": 2,
    "model.ff_dim": 64,
    "model.encoder_layers": 2,
    "model.decoder_layers": 2,
    "train.num_steps": 20,
    "train.log_every_steps": 10,
    "train.checkpoint_every_steps": 10,
    "eval.every_steps": 20,
    "eval.max_examples": 64,
    "eval.num_attention_plots": 1,
}


def make_quick(config, overrides: dict | None = None):
  """The `quick` form of a config (every config has one; the tests use it):
  `QUICK`, a sentencepiece or word vocabulary of at most 500, then `overrides`
  (`{"train.num_steps": 60}`). Changes `config` in place and returns it."""
  config.dataset.vocab_size = min(config.dataset.vocab_size, 500) or 0
  for field, value in {**QUICK, **(overrides or {})}.items():
    section, name = field.split(".")
    config[section][name] = value
  return config


# Fields added after runs were saved without them, with the value that does what
# those runs did: the RNN family (and the transformer's fields, which it does not
# read, at configs/default.py's values), a constant learning rate, optax's Adam defaults.
ADDED_FIELDS = {
    "dataset.joint_vocab": False,
    "dataset.number_split": "hash",
    "model.family": "rnn",
    "model.d_model": 256,
    "model.num_heads": 4,
    "model.ff_dim": 1024,
    "model.encoder_layers": 3,
    "model.decoder_layers": 3,
    "model.attention_dropout": 0.0,
    "model.norm": "post",
    "model.positions": "sinusoidal",
    "model.max_len": 512,
    "model.share_embeddings": False,
    "model.tie_output": False,
    "train.lr_schedule": "constant",
    "train.warmup_steps": 0,
    "train.lr_halve_after": 0,
    "train.lr_halve_every": 1000,
    "train.adam_b1": 0.9,
    "train.adam_b2": 0.999,
    "train.adam_eps": 1e-8,
    "train.early_stopping": {"patience": 0, "metric": "bleu", "min_delta": 0.0},
    "train.init_from": "",
}


def read_saved(path) -> dict:
  """A workdir's `config.json`, in today's field meanings.

  A run trained before the learning-parity fix has no `train.loss_normalization`;
  its `model.decoder_init="last"` handed the decoder the encoder's whole final
  state, cell state included, which is `"last_state"` now. A field added since
  the run gets `ADDED_FIELDS`' value, the one that does what the run did.
  """
  config = files.read_json(path)
  for field, value in ADDED_FIELDS.items():
    section, name = field.split(".")
    if section in config and name not in config[section]:
      config[section][name] = value
  if ("loss_normalization" not in config.get("train", {})
      and config.get("model", {}).get("decoder_init") == "last"):
    config["model"]["decoder_init"] = "last_state"
    log.info("%s is from before the parity fix: decoder_init 'last' read as 'last_state'",
             path)
  return config


def flatten(tree, prefix="") -> dict:
  """`{"model": {"cell": "lstm"}}` -> `{"model.cell": "lstm"}`."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def differences(old: dict, new: dict) -> list[str]:
  """Lines `field: old -> new` for every field that differs (either side may lack it)."""
  a, b = flatten(old), flatten(new)
  missing = "<absent>"
  return [f"{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}"
          for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]
