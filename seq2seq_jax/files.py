"""Files written whole (a reader, or a run resumed after a kill, sees the old
content or the new, never a part), JSON read back with the file named when it
is damaged, and the lock a process holds on its directory. Pure Python, for
every layer."""

import contextlib
import fcntl
import json
import os
from pathlib import Path
import socket
import time


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


def read_json(path, keys: tuple[str, ...] | None = None):
  """The JSON in `path`. A damaged file (cut short by a kill or a full disk, or
  edited by hand) is a ValueError naming it, with the line, instead of the bare
  parser message; so is JSON of another shape where `keys` asks for an object
  with those keys (`()`: any object)."""
  path = Path(path)
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    where = f"{path}:{e.lineno}" if isinstance(e, json.JSONDecodeError) else str(path)
    raise ValueError(f"{where}: damaged, not JSON ({getattr(e, 'msg', e)}); {_FIX}") from None
  if keys is not None and not (isinstance(data, dict) and all(k in data for k in keys)):
    raise wrong_shape(path, keys)
  return data


_FIX = "restore it from a copy, or start the run over in another --workdir"


def wrong_shape(path, keys: tuple[str, ...]) -> ValueError:
  """The error of a JSON file that is not the object with `keys` a run writes there."""
  want = f"an object with {', '.join(keys)}" if keys else "an object"
  return ValueError(f"{path}: damaged, not what a run writes there ({want}); {_FIX}")


class DirectoryInUse(OSError):
  """Another process holds the directory's lock (`hold_directory`)."""


LOCK_NAME = "lock"
_HELD: dict[str, int] = {}  # the directories this process holds, and how often (re-entrant)


@contextlib.contextmanager
def hold_directory(directory, what: str = "run"):
  """Holds `directory/lock` (made with the directory if missing) while the block runs:
  a second process that asks for it raises `DirectoryInUse` naming the holder,
  before it writes anything there.

  The lock is the kernel's `flock`, released when its process ends however it ends
  (kill -9 included), so a dead run's lock is never stale. On NFS, Linux emulates
  flock with the server's byte-range locks: a crashed client host's lock lasts
  until the server's lease on it runs out (NFSv4: 90 s by default). The file is
  removed on release, with the directories made for it that are still empty, so a
  failed start leaves no workdir behind.
  """
  directory = Path(directory).resolve()
  key = str(directory)
  if key in _HELD:  # this process already holds it (a stack trained in parts)
    _HELD[key] += 1
    try:
      yield
    finally:
      _HELD[key] -= 1
    return
  made = [p for p in (directory, *directory.parents) if not p.exists()]
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / LOCK_NAME
  while True:
    f = open(path, "a+", encoding="utf-8")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "a process that has not said which"
      f.close()
      raise DirectoryInUse(f"{directory} is in use by another {what} ({holder}): wait for "
                           "it to end (or stop it), or use another directory") from None
    try:  # its holder before us may have removed it since we opened it: retry then
      if os.fstat(f.fileno()).st_ino == os.stat(path).st_ino:
        break
    except FileNotFoundError:
      pass
    f.close()
  f.truncate(0)
  f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
  f.flush()
  _HELD[key] = 1
  try:
    yield
  finally:
    del _HELD[key]
    path.unlink(missing_ok=True)  # while still holding it: a waiter then retries
    f.close()
    for p in made:  # deepest first; stops at the first that is not empty
      try:
        p.rmdir()
      except OSError:
        break
