"""Files written whole: a reader (or a run resumed after a kill) sees the old
content or the new, never a part. Pure Python, for every layer."""

import os
from pathlib import Path


def write_atomically(path, text: str) -> None:
  """Writes `text` to `path.tmp` beside it, then renames it over `path` (atomic on
  POSIX); a killed write leaves only the `.tmp`, which the next write replaces."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)
