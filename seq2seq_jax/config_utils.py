"""Checking a config before any work starts, comparing two of them, and reading a saved one."""

import importlib.util
import json
import logging
from pathlib import Path

from seq2seq_jax import data, evaluate, models, train

log = logging.getLogger(__name__)


def load_module(path):
  """A Python file loaded by path (config files, which are not in a package)."""
  path = Path(path)
  spec = importlib.util.spec_from_file_location(f"_config_{path.parent.name}_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def read_saved(path) -> dict:
  """A workdir's `config.json`, in today's field meanings.

  A run trained before the learning-parity fix has no `train.loss_normalization`;
  its `model.decoder_init="last"` handed the decoder the encoder's whole final
  state, cell state included, which is `"last_state"` now.
  """
  config = json.loads(Path(path).read_text())
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


def _positive_int(config, field):
  value = config
  for part in field.split("."):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f"{field} must be a positive int, got {value!r}")
  return value


def validate(config) -> None:
  """Raises ValueError naming the first bad field (and its valid choices)."""
  if not data.is_dataset_name(config.dataset.name):
    raise ValueError(f"dataset.name={config.dataset.name!r} is not valid; valid datasets: "
                     f"{', '.join(data.dataset_names())}")
  models.Seq2Seq(src_vocab_size=8, tgt_vocab_size=8, **config.model)  # checks model.*
  train.teacher_forcing_from_config(config.train.teacher_forcing)  # checks the schedule
  train.make_optimizer(config.train.learning_rate, config.train.clip_norm,
                       config.train.optimizer)
  train.check_loss_normalization(config.train.loss_normalization)
  if not 0.0 <= config.train.label_smoothing < 1.0:
    raise ValueError(f"train.label_smoothing must be in [0, 1), got "
                     f"{config.train.label_smoothing!r}")
  for field in ("train.num_steps", "train.batch_size", "train.keep_checkpoints",
                "eval.batch_size", "dataset.dev_size", "dataset.test_size"):
    _positive_int(config, field)
  log_every = _positive_int(config, "train.log_every_steps")
  for field in ("train.checkpoint_every_steps", "eval.every_steps"):
    every = _positive_int(config, field)
    if every % log_every:  # exact resume restarts at a logging boundary
      raise ValueError(f"{field}={every} must be a multiple of train.log_every_steps="
                       f"{log_every}")
  _positive_int(config, "eval.beam_size")
  check_eval_decoding(config.eval)


def check_eval_decoding(cfg_eval) -> None:
  """The decoding fields of an `eval` section."""
  try:
    options = evaluate.decode_options(cfg_eval)
  except (TypeError, ValueError) as e:
    raise ValueError(f"eval.max_len_a / eval.length_penalty must be numbers: {e}") from None
  check_decode_options(options)


def check_decode_options(options: dict) -> None:
  """`evaluate.decode_options`' keyword arguments (also built from the translate flags)."""
  from seq2seq_jax import decoding
  try:
    decoding.check_length_penalty(options["length_penalty_alpha"], options["penalty_type"])
  except ValueError as e:
    raise ValueError(f"eval.length_penalty / eval.length_penalty_type: {e}") from None
  if not options["max_len_a"] >= 0 or isinstance(options["max_len_b"], bool) or \
      not isinstance(options["max_len_b"], int):
    raise ValueError(f"eval.max_len_a must be >= 0 and eval.max_len_b an int, got "
                     f"{options['max_len_a']!r} and {options['max_len_b']!r}")
