"""`--config_help`: every field of a config, its value, and the comment written
beside the field in `configs/default.py` (the one place the fields are documented)."""

import ast
import io
from pathlib import Path
import tokenize

from seq2seq_jax import config_utils

DEFAULT = Path(__file__).resolve().parent.parent / "configs" / "default.py"


def _dict_call(node):
  """The `dict(...)` call of `ml_collections.ConfigDict(dict(...))` or `dict(...)`."""
  if not isinstance(node, ast.Call):
    return None
  name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
  if name == "dict":
    return node
  if name == "ConfigDict" and node.args:
    return _dict_call(node.args[0])
  return None


def field_comments(path=DEFAULT) -> dict[str, str]:
  """{"model.cell": "rnn | lstm | gru | ln_lstm", ...}: a field's comment is the one
  on its line, after the comment lines right above it."""
  source = Path(path).read_text(encoding="utf-8")
  lines = source.splitlines()
  comments = {tok.start[0]: tok.string.lstrip("#").strip()
              for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT}
  out = {}

  def visit(call, prefix):
    for kw in call.keywords:
      above, line = [], kw.lineno - 1
      while line in comments and lines[line - 1].lstrip().startswith("#"):
        above.insert(0, comments[line])
        line -= 1
      text = " ".join(above + ([comments[kw.lineno]] if kw.lineno in comments
                               and not lines[kw.lineno - 1].lstrip().startswith("#") else []))
      if text:
        out[prefix + kw.arg] = text
      inner = _dict_call(kw.value)
      if inner is not None:
        visit(inner, prefix + kw.arg + ".")

  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)
        and getattr(node.targets[0].value, "id", "") == "config"):
      inner = _dict_call(node.value)
      if inner is not None:
        visit(inner, node.targets[0].attr + ".")
      elif node.lineno in comments:  # config.seed = 0  # ...
        out[node.targets[0].attr] = comments[node.lineno]
  return out


def describe(config) -> str:
  """One line a field: `model.cell = 'lstm'  # rnn | lstm | gru | ln_lstm`."""
  comments = field_comments()
  rows = []
  for name, value in config_utils.flatten(config.to_dict()).items():
    comment = comments.get(name)
    rows.append(f"{name} = {value!r}" + (f"  # {comment}" if comment else ""))
  return "\n".join(rows)
