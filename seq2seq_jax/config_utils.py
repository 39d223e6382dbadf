"""Config files: loading them, every config's `quick` form, and comparing two configs.
The fields, their defaults and the reading of a saved config are `config_schema`'s.
Pure Python, so a config file that imports this loads in milliseconds (the checks
that need the model and the data are `config_checks`)."""

import importlib.util
from pathlib import Path


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
