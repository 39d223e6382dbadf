"""A sweep's members: `get_sweep()` of a config file expanded into named runs.

Member K of the sweep in `DIR` trains in `DIR/members/NAME`, logs to
`DIR/logs/NAME.log` and records its state in `DIR/status/NAME.json`; a lock
file beside it keeps two processes off one member.
"""

import fcntl
import inspect
import json
from pathlib import Path

import ml_collections

from seq2seq_jax import config_checks, config_utils, files, hyper


class SweepError(ValueError):
  pass


class Member:
  def __init__(self, index: int, name: str, overrides: dict, config, root: Path):
    self.index, self.name, self.overrides, self.config = index, name, overrides, config
    self.workdir = root / "members" / name
    self.status_path = root / "status" / f"{name}.json"
    self.lock_path = root / "status" / f"{name}.lock"
    self.log_path = root / "logs" / f"{name}.log"

  def status(self) -> dict:
    try:
      return json.loads(self.status_path.read_text())
    except (OSError, ValueError):
      return {}

  def write_status(self, **fields) -> None:
    self.status_path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomically(self.status_path, json.dumps({**self.status(), **fields}, indent=1)
                           + "\n")

  def locked(self) -> bool:
    """Whether a live process holds this member's lock."""
    if not self.lock_path.exists():
      return False
    with open(self.lock_path) as f:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        return True
      fcntl.flock(f, fcntl.LOCK_UN)
      return False

  def state(self) -> str:
    """pending | running | interrupted | done | failed."""
    state = self.status().get("state")
    if state == "running":
      return "running" if self.locked() else "interrupted"
    return state or ("interrupted" if self.workdir.exists() else "pending")


def load_sweep(config_arg: str) -> list[dict]:
  """`get_sweep([arg])` of the config file `path[:arg]`."""
  path, _, arg = config_arg.partition(":")
  module = config_utils.load_module(path)
  get_sweep = getattr(module, "get_sweep", None)
  if get_sweep is None:
    raise SweepError(f"{path} defines no get_sweep(); see seq2seq_jax/hyper.py")
  takes_arg = bool(inspect.signature(get_sweep).parameters)
  if arg and not takes_arg:
    raise SweepError(f"{path}: get_sweep() takes no argument, got {arg!r}")
  members = get_sweep(arg or None) if takes_arg else get_sweep()
  if not isinstance(members, (list, tuple)) or not all(isinstance(m, dict) for m in members):
    raise SweepError(f"{path}: get_sweep() must return a list of members, each a dict of "
                     f"overrides ({{'model.cell': 'gru', ...}}; seq2seq_jax/hyper.py builds "
                     f"them), got {type(members).__name__}"
                     + (f" of {', '.join(sorted({type(m).__name__ for m in members}))}"
                        if isinstance(members, (list, tuple)) else ""))
  if not members:
    raise SweepError(f"{path}: get_sweep() returned no members")
  return members


def apply_overrides(config, overrides: dict, label: str):
  """A copy of `config` with `overrides` (`{"model.cell": "gru"}`) set; a
  field that does not exist or a value of the wrong type names the member."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.lock()
  for field, value in overrides.items():
    node, parts = config, field.split(".")
    try:
      for part in parts[:-1]:
        node = node[part]
      if parts[-1] not in node:
        raise KeyError(parts[-1])
      node[parts[-1]] = tuple(value) if isinstance(node[parts[-1]], tuple) else value
    except (KeyError, AttributeError, TypeError) as e:
      raise SweepError(f"member {label}: cannot set {field}={value!r} ({type(e).__name__}: "
                       f"{e})") from None
  return config


def expand(config, config_arg: str, root: Path) -> list[Member]:
  """The sweep's members, each config checked before anything runs."""
  sweep = load_sweep(config_arg)
  names = hyper.member_names(sweep)
  members = []
  for index, (name, overrides) in enumerate(zip(names, sweep)):
    member_config = apply_overrides(config, overrides, f"{index} ({name})")
    try:
      member_config = config_checks.validate(member_config)  # the typed config
    except ValueError as e:
      raise SweepError(f"member {index} ({name}): {e}") from None
    members.append(Member(index, name, overrides, member_config, root))
  return members
