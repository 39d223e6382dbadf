"""The config schema (`seq2seq_jax/config_schema.py`): the defaults against the code
before the schema (the baseline commit's `base_config` and `read_saved`), typed and
frozen sections, one error line for an unknown field or a wrong type, and no
`.get(field, default)` left in the package."""

import dataclasses
import json
from pathlib import Path
import re
import subprocess
import sys

from conftest import code_env
import pytest

from seq2seq_jax import config_schema, config_utils

ROOT = Path(__file__).resolve().parent.parent
# An old workdir's config.json: today's quick config less the fields added since
# the first runs, and decoder_init "last" from before the parity fix.
ADDED_SINCE = ("dataset.joint_vocab", "dataset.number_split", "dataset.max_src_len",
               "dataset.max_tgt_len", "dataset.bucket_boundaries", "model.family",
               "model.norm", "train.lr_schedule", "train.adam_b2", "train.early_stopping",
               "train.init_from", "train.loss_normalization", "eval.report_greedy", "mesh",
               "dataset.spm_input_sentence_size", "dataset.max_dropped_fraction",
               "dataset.dev_path", "dataset.test_path", "train.batch_tokens",
               "train.grad_accum_steps", "train.weight_decay", "train.ema_decay",
               "dataset.subword_alpha", "dataset.subword_nbest", "train.plateau_factor",
               "train.plateau_patience", "eval.min_len", "eval.no_repeat_ngram",
               "eval.repetition_penalty", "eval.top_p")
BASELINE_SCRIPT = """
import json, sys
from seq2seq_jax import config_utils
default = config_utils.load_module("configs/default.py")
saved = config_utils.read_saved(sys.argv[1])
print(json.dumps({"base": default.base_config().to_dict(),
                  "quick": default.get_config("quick").to_dict(), "saved": saved}))
"""


def _old_config_json(tmp_path) -> Path:
  tree = json.loads(json.dumps(config_utils.load_module(ROOT / "configs" / "default.py")
                               .get_config("quick").to_dict()))
  tree["model"]["decoder_init"] = "last"
  for field in ADDED_SINCE:
    node, *rest = field.split(".")
    if rest:
      del tree[node][rest[0]]
    else:
      del tree[node]
  path = tmp_path / "config.json"
  path.write_text(json.dumps(tree))
  return path


def test_the_defaults_and_a_saved_configs_reading_are_the_code_befores(baseline_code, tmp_path):
  path = _old_config_json(tmp_path)
  proc = subprocess.run([sys.executable, "-c", BASELINE_SCRIPT, str(path)], cwd=baseline_code,
                        env=code_env(baseline_code), capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  before = json.loads(proc.stdout)
  default = config_utils.load_module(ROOT / "configs" / "default.py")
  # json keeps 0 and 0.0 apart: the types are compared too
  assert json.dumps(_before_added(default.base_config())) == json.dumps(before["base"])
  assert json.dumps(_before_added(default.get_config("quick"))) == json.dumps(before["quick"])
  # every field the old reading filled in, filled in alike; the rest at its default
  today = config_utils.flatten(config_schema.as_dict(config_schema.read_saved(path)))
  old = config_utils.flatten(before["saved"])
  assert {k: today[k] for k in old} == old
  assert today["model.decoder_init"] == "last_state" and today["dataset.number_split"] == "hash"
  assert today["dataset.max_src_len"] == 0  # no length filter before the field: what it did
  assert today["eval.report_greedy"] is False and today["mesh.data"] == 0
  # fields added after the baseline: what a run saved before them did
  assert today["dataset.max_dropped_fraction"] == 1.0  # any share dropped, with a warning
  assert today["dataset.spm_input_sentence_size"] == 0  # sentencepiece on every sentence
  # (issue 29) sentence batches, one batch an update, no decay, no average, hashed splits
  assert (today["train.batch_tokens"], today["train.grad_accum_steps"]) == (0, 1)
  assert (today["train.weight_decay"], today["train.ema_decay"]) == (0.0, 0.0)
  assert (today["dataset.dev_path"], today["dataset.test_path"]) == ("", "")
  assert today["dataset.subword_alpha"] == 0.0 and today["train.lr_schedule"] == "constant"


# Fields added after the baseline commit (issue 28), with the section they are in.
ADDED_AFTER_BASELINE = {"dataset": ("spm_input_sentence_size", "max_dropped_fraction",
                                    "subword_alpha", "subword_nbest", "dev_path", "test_path"),
                        "train": ("batch_tokens", "grad_accum_steps", "weight_decay",
                                  "ema_decay", "plateau_factor", "plateau_patience"),
                        "eval": ("min_len", "no_repeat_ngram", "repetition_penalty", "top_p")}


def _before_added(config) -> dict:
  """`config` as a dict without the fields the baseline did not have."""
  tree = config.to_dict()
  for section, names in ADDED_AFTER_BASELINE.items():
    for name in names:
      del tree[section][name]
  return tree


def test_a_workdir_saved_before_the_recipe_fields_is_the_same_run_today(tmp_path):
  """Issue 29's fields read as what a run without them did: no config difference, so
  the workdir resumes (before their `absent`: refused as `'<absent>' -> 64`)."""
  from seq2seq_jax.training import workdir as workdir_files
  config = config_utils.load_module(ROOT / "configs" / "default.py").get_config("quick")
  tree = json.loads(json.dumps(config.to_dict()))
  for section, names in ADDED_AFTER_BASELINE.items():
    for name in names:
      if name not in ("spm_input_sentence_size", "max_dropped_fraction"):  # issue 28's
        del tree[section][name]
  (tmp_path / "config.json").write_text(json.dumps(tree))
  workdir_files.check_config(config_schema.build(config), tmp_path, "error")  # no ValueError
  assert (tmp_path / "config.json").exists()


def test_a_config_is_typed_frozen_and_complete():
  config = config_schema.build({"train": {"learning_rate": 1, "early_stopping": {"patience": 2}},
                                "dataset": {"bucket_boundaries": [10, 20]}})
  assert config.train.learning_rate == 1.0 and type(config.train.learning_rate) is float
  assert config.dataset.bucket_boundaries == (10, 20)
  assert config.train.early_stopping == config_schema.EarlyStopping(patience=2)
  assert config.eval.max_len_a == 5.0 and config.model.family == "rnn"  # the defaults
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.train.num_steps = 5
  assert config_schema.build(config) is config


@pytest.mark.parametrize("given,message", [
    ({"train": {"num_step": 5}}, "config field train.num_step is not known; valid fields of "
                                 "train: num_steps, batch_size"),
    ({"trian": {}}, "config field trian is not known"),
    ({"train": {"num_steps": "5"}}, r"config field train.num_steps='5' must be int"),
    ({"model": {"bidirectional": 1}}, "config field model.bidirectional=1 must be bool"),
    ({"train": {"batch_size": True}}, "config field train.batch_size=True must be int"),
    ({"train": {"early_stopping": 3}}, "config field train.early_stopping must be a section"),
])
def test_a_bad_field_is_named(given, message):
  with pytest.raises(ValueError, match=message):
    config_schema.build(given)


def test_every_field_is_documented_once_and_the_decoder_takes_the_eval_defaults():
  from seq2seq_jax import decoding
  helps = config_schema.fields_help()
  flat = config_utils.flatten(config_schema.as_dict(config_schema.Config()))
  assert list(helps) == list(flat) and all(helps.values())
  options = decoding.DecodeOptions()
  for name in ("beam_size", "length_penalty", "length_penalty_type", "max_len_a", "max_len_b"):
    assert getattr(options, name) == flat[f"eval.{name}"], name


def test_the_package_reads_no_config_field_with_a_default_of_its_own():
  """`cfg.get("vocab_size", 0)` would hold a second default; a section's field is read
  as an attribute. (Mappings that are not config sections may use `.get`.)"""
  pattern = re.compile(r"\b(config|configs\[\d\]|cfg|cfg_eval|train_config|tc|model_config|"
                       r"tf_config|mesh_config)(\.\w+)*\.get\(|"
                       r"\.(dataset|model|train|eval|mesh|teacher_forcing|early_stopping)\.get\(")
  hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
          for path in sorted((ROOT / "seq2seq_jax").rglob("*.py"))
          for n, line in enumerate(path.read_text().splitlines(), 1)
          if pattern.search(line) and "model_config.get(\"family\"" not in line]
  assert not hits, "\n".join(hits)
