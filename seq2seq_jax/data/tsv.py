"""Tab-separated parallel text: source, target, an optional ignored third column.

Bad lines (not UTF-8, empty, no tab, an empty side) are counted, the first few
reported with file and line number, and skipped; a file with no usable pair is
an error.
"""

import bz2
import gzip
import hashlib
import logging
import lzma
from pathlib import Path

log = logging.getLogger(__name__)
SHOW = 5  # bad lines quoted in the report


def open_corpus(path: Path):
  """A corpus file for reading bytes, decompressed by its suffix (.gz, .xz, .bz2)."""
  opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(path.suffix, open)
  return opener(path, "rb")


def _read_line(raw: bytes, number: int, pairs: list, bad: dict) -> None:
  """Line `number` into `pairs`, or its line number into `bad` under the reason."""
  try:
    line = raw.decode("utf-8").rstrip("\r\n")
  except UnicodeDecodeError:
    bad.setdefault("not UTF-8", []).append(number)
    return
  if not line.strip():
    bad.setdefault("empty line", []).append(number)
    return
  if "\t" not in line:
    bad.setdefault("no tab", []).append(number)
    return
  src, tgt = (line.split("\t") + [""])[:2]
  if not src.strip() or not tgt.strip():
    bad.setdefault("empty source or target", []).append(number)
    return
  pairs.append((src.strip(), tgt.strip()))


def read_pairs(path) -> tuple[list[tuple[str, str]], dict]:
  """Pairs of `path` and a report `{reason: [line numbers]}` of skipped lines."""
  bad = {}
  return list(stream_pairs(path, bad)), bad


def stream_pairs(path, bad: dict):
  """The pairs of `path` one at a time (memory flat in the file's size); skipped
  lines go into `bad` as `{reason: [line numbers]}` and are reported at the end."""
  path = check_corpus(path)
  number, found = 0, 0
  try:
    with open_corpus(path) as f:
      for number, raw in enumerate(f, 1):
        pairs = []
        _read_line(raw, number, pairs, bad)
        if pairs:
          found += 1
          yield pairs[0]
  except (EOFError, OSError, lzma.LZMAError) as e:  # a compressed file cut short or damaged
    raise ValueError(f"{path}: cannot be read after line {number} ({type(e).__name__}: {e}); "
                     "is the download complete?") from None
  for reason, lines in bad.items():
    shown = ", ".join(f"{path}:{n}" for n in lines[:SHOW])
    log.warning("%s: skipped %d lines (%s): %s%s", path, len(lines), reason, shown,
                " ..." if len(lines) > SHOW else "")
  if not found:
    skipped = ", ".join(f"{len(v)} {k}" for k, v in bad.items()) or "the file is empty"
    raise ValueError(f"{path}: no usable pair (skipped: {skipped})")


def check_corpus(path, field: str = "dataset.name=tsv:") -> Path:
  """`path`, a corpus file that exists; else the error that names `field` (the config
  field that gave the path) and says what to give."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{field}{path}: the file {path} does not exist; give "
                            "a TSV corpus (source<TAB>target a line, .gz/.xz/.bz2 allowed)")
  if path.is_dir():
    raise IsADirectoryError(f"{field}{path}: {path} is a directory; give a TSV corpus "
                            "file (source<TAB>target a line, .gz/.xz/.bz2 allowed)")
  return path


def file_digest(path) -> str:
  """sha256 of the file's bytes (compressed as stored): the corpus's identity."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return digest.hexdigest()


def split_by_hash(pairs, dev_size: int, test_size: int) -> dict:
  """Deterministic split: a pair's split depends on a hash of its source alone,
  so duplicates of a source never straddle splits."""
  keyed = sorted(pairs, key=lambda p: (hashlib.sha1(p[0].encode()).hexdigest(), p))
  sources = []
  for src, _ in keyed:
    if not sources or sources[-1] != src:
      sources.append(src)
  if dev_size + test_size >= len(sources):
    raise ValueError(f"dataset.dev_size + dataset.test_size = {dev_size + test_size} leaves "
                     f"no training pairs out of {len(sources)} distinct sources")
  dev_src, test_src = set(sources[:dev_size]), set(sources[dev_size:dev_size + test_size])
  out = {"train": [], "dev": [], "test": []}
  for pair in keyed:
    out["dev" if pair[0] in dev_src else "test" if pair[0] in test_src else "train"].append(pair)
  return out
