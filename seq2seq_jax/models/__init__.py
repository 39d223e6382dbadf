"""Model families behind one interface (`models.interface.Seq2SeqModel`).

`build(config.model, src_vocab_size, tgt_vocab_size)` picks the family by
`config.model.family` and checks its hyperparameters.
"""

import dataclasses
from typing import Any, Mapping

from seq2seq_jax import config_schema
from seq2seq_jax.models import rnn, transformer
from seq2seq_jax.models.interface import ForwardOutput, Seq2SeqModel

# family -> (frozen config struct, module taking it as its one attribute)
FAMILIES: dict[str, tuple[type, type]] = {
    "rnn": (rnn.RNNConfig, rnn.RNNSeq2Seq),
    "transformer": (transformer.TransformerConfig, transformer.TransformerSeq2Seq),
}


def _family(model_config: Mapping[str, Any]) -> str:
  # A mapping written by hand may leave the family out (the family structs' own
  # defaults fill the rest); a config's `model` section always has it.
  family = model_config.get("family", config_schema.Model.family)
  if family not in FAMILIES:
    raise ValueError(f"model.family={family!r} is not valid; valid families: "
                     f"{', '.join(FAMILIES)}")
  return family


def family_config(model_config: Mapping[str, Any], src_vocab_size: int,
                  tgt_vocab_size: int):
  """The family's config struct of a `config.model` section; ValueError names a bad field.

  One `config.model` may hold the fields of several families (a sweep that
  compares them, `configs/default.py`); the fields of the other families are
  left out. A field that no family has is an error.
  """
  model_config = config_schema.as_dict(model_config)
  family = _family(model_config)
  config_type, _ = FAMILIES[family]
  own = {f.name for f in dataclasses.fields(config_type)}
  others = {f.name for t, _ in FAMILIES.values() for f in dataclasses.fields(t)} - own
  fields = {k: v for k, v in dict(model_config).items()
            if k != "family" and k not in others}
  try:
    return config_type(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, **fields)
  except TypeError as e:  # a field the family does not have
    raise ValueError(f"model: {e} (family {family!r})") from None


def build(model_config: Mapping[str, Any], src_vocab_size: int,
          tgt_vocab_size: int) -> Seq2SeqModel:
  """The model of a `config.model` section, for the given vocabulary sizes."""
  _, module_type = FAMILIES[_family(config_schema.as_dict(model_config))]
  return module_type(family_config(model_config, src_vocab_size, tgt_vocab_size))


__all__ = ["FAMILIES", "ForwardOutput", "Seq2SeqModel", "build", "family_config"]
