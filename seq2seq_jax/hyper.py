"""Sweep specifications: products and zips of config-field overrides.

A config file defines the sweep next to `get_config` (as big_vision's configs
do with `get_hyper`):

    from seq2seq_jax import hyper

    def get_sweep(arg=None):
      return hyper.product([
          hyper.sweep("model.cell", ["rnn", "lstm", "gru"]),
          hyper.zipit([hyper.sweep("model.attention", ["none", "dot"]),
                       hyper.sweep("model.input_feeding", [False, True])]),
          hyper.sweep("seed", [0, 1, 2]),
      ])

A sweep is an ordered list of override dicts (`{"model.cell": "gru", "seed": 1}`);
`product` varies its last axis fastest, `zipit` walks its axes together.
"""

import hashlib
import itertools
import math
import re

Sweep = list[dict]


def sweep(field: str, values) -> Sweep:
  """One axis: `field` takes each of `values` in turn."""
  values = list(values)
  if not values:
    raise ValueError(f"sweep over {field!r} has no values")
  return [{field: v} for v in values]


def fixed(field: str, value) -> Sweep:
  """The same value for every member (an axis of length 1)."""
  return [{field: value}]


def _merge(parts) -> dict:
  out = {}
  for part in parts:
    for field in part:
      if field in out:
        raise ValueError(f"sweep sets field {field!r} twice")
    out.update(part)
  return out


def product(axes: list[Sweep]) -> Sweep:
  """Every combination of the axes, the last varying fastest."""
  return [_merge(parts) for parts in itertools.product(*axes)]


def zipit(axes: list[Sweep]) -> Sweep:
  """The axes walked together; they must have the same length."""
  lengths = {len(a) for a in axes}
  if len(lengths) > 1:
    raise ValueError(f"zipit needs axes of one length, got {[len(a) for a in axes]}")
  return [_merge(parts) for parts in zip(*axes)]


def _format(value) -> str:
  if isinstance(value, float):
    return repr(value) if math.isfinite(value) and value != int(value) else str(value)
  if isinstance(value, (tuple, list)):
    return "(" + "-".join(_format(v) for v in value) + ")"
  return str(value)


# A member's name is a file name (`status/NAME.json`): file systems allow 255 bytes.
MAX_NAME_BYTES = 200


def _fit_file_name(name: str) -> str:
  """`name`, or where longer than MAX_NAME_BYTES in UTF-8 its start and a hash of it all."""
  data = name.encode()
  if len(data) <= MAX_NAME_BYTES:
    return name
  digest = hashlib.sha256(data).hexdigest()[:12]
  return data[:MAX_NAME_BYTES - 13].decode(errors="ignore") + "~" + digest


def member_names(members: Sweep) -> list[str]:
  """`cell=gru,attention=dot,seed=1`: the last part of each field's name (the
  full name where two fields share a last part), in the member's order."""
  fields = [f for m in members for f in m]
  short = {}
  for f in dict.fromkeys(fields):
    tail = f.rsplit(".", 1)[-1]
    short[f] = tail if sum(g.rsplit(".", 1)[-1] == tail for g in set(fields)) == 1 else f
  names = []
  for m in members:
    name = ",".join(f"{short[f]}={_format(v)}" for f, v in m.items()) or "base"
    names.append(_fit_file_name(re.sub(r"[^\w.,=()+-]", "_", name)))
  if len(set(names)) != len(names):
    dup = [n for n in names if names.count(n) > 1][0]
    raise ValueError(f"two sweep members have the same overrides: {dup}")
  return names


def group_key(overrides: dict, over: tuple = ("seed",)) -> dict:
  """The overrides without the fields averaged over (by last name: `seed`)."""
  return {f: v for f, v in overrides.items() if f.rsplit(".", 1)[-1] not in over}
