"""Files written whole (a reader, or a run resumed after a kill, sees the old
content or the new, never a part) and JSON read back with the file named when it
is damaged. Pure Python, for every layer."""

import json
import os
from pathlib import Path


def write_atomically(path, text: str) -> None:
  """Writes `text` to `path.tmp` beside it, then renames it over `path` (atomic on
  POSIX); a killed write leaves only the `.tmp`, which the next write replaces, and
  a failed one (a full disk) removes it."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  try:
    tmp.write_text(text, encoding="utf-8")
  except OSError:  # a full disk: no part of the new text stays behind
    tmp.unlink(missing_ok=True)
    raise
  os.replace(tmp, path)


def read_json(path):
  """The JSON in `path`. A damaged file (cut short by a kill or a full disk, or
  edited by hand) is a ValueError naming it, with the line, instead of the bare
  parser message."""
  path = Path(path)
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    where = f"{path}:{e.lineno}" if isinstance(e, json.JSONDecodeError) else str(path)
    raise ValueError(f"{where}: damaged, not JSON ({getattr(e, 'msg', e)}); restore it from a "
                     "copy, or start the run over in another --workdir") from None
