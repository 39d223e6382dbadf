"""Stage 1 of `data.prepare`: a corpus's pairs on disk, one UTF-8 line each
(`texts.tsv`), with each line's byte offset and each split's rows in order; and
`Texts`, the pairs of some rows, read on demand."""

import hashlib
import json
import logging
import mmap
import os
from pathlib import Path
import time

import numpy as np

from seq2seq_jax import files
from seq2seq_jax.data import sources, tsv

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the files or their meaning change
SPLITS = ("train", "dev", "test")


class Texts:
  """The pairs `rows` of a `texts/` stage, read from disk when asked for; compares
  equal to the list of them."""

  def __init__(self, directory: Path, rows: np.ndarray):
    self.directory, self.rows = directory, rows
    self._offsets = np.load(directory / "texts.offsets.npy", mmap_mode="r")
    with open(directory / "texts.tsv", "rb") as f:  # the map outlives the file object
      size = os.fstat(f.fileno()).st_size
      self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

  def pair(self, row: int) -> tuple[str, str]:
    src, tgt = self._map[self._offsets[row]:self._offsets[row + 1] - 1].decode().split("\t", 1)
    return src, tgt

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self.pair(int(r)) for r in self.rows[index]]
    return self.pair(int(self.rows[index]))

  def __iter__(self):
    return (self.pair(int(r)) for r in self.rows)

  def __eq__(self, other) -> bool:
    return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other))


def write(cfg, identity: dict, tmp: Path) -> None:
  """Stage 1 into `tmp`: `texts.tsv`, its line offsets, each split's rows, `meta.json`."""
  t0 = time.time()
  with open(tmp / "texts.tsv", "wb") as out:
    offsets, digests = [0], bytearray()

    def write(pair) -> None:
      # The first tab ends the source (a tfds source may hold one: a space there); lines
      # are found by their offsets, so a newline inside a sentence is kept.
      line = f"{pair[0].replace(chr(9), ' ')}\t{pair[1]}\n".encode()
      out.write(line)
      offsets.append(offsets[-1] + len(line))

    path = sources.corpus_file(cfg)
    if path is not None:  # a TSV corpus: split by the hash of each source
      log.info("%s: reading %s ...", cfg.name, path)
      for pair in tsv.stream_pairs(path, {}):
        write(pair)
        digests += hashlib.sha1(pair[0].encode()).digest()
      given, given_sources = {}, bytearray()
      for split, split_path in sources.split_files(cfg).items():  # after the corpus's lines
        start = len(offsets) - 1
        for pair in tsv.stream_pairs(split_path, {}):
          write(pair)
          given_sources += hashlib.sha1(pair[0].encode()).digest()
        given[split] = np.arange(start, len(offsets) - 1, dtype=np.int64)
    else:
      by_split = sources.load_split_texts(cfg)
      rows, start = {}, 0
      for split in SPLITS:
        for pair in by_split[split]:
          write(pair)
        rows[split] = np.arange(start, start + len(by_split[split]), dtype=np.int64)
        start += len(by_split[split])
  np.save(tmp / "texts.offsets.npy", np.asarray(offsets, np.int64))
  if path is not None:
    rows = _split_by_hash(Texts(tmp, np.zeros(0, np.int64)), digests,
                          0 if "dev" in given else cfg.dev_size,
                          0 if "test" in given else cfg.test_size)
    rows.update(given)
    if given:
      rows["train"] = _without_sources(rows["train"], digests, given_sources,
                                       sorted({s.split("-")[0] for s in given}))
  for split in rows:  # SPLITS, then a corpus's extra dev sets
    if not len(rows[split]):
      raise ValueError(f"dataset {cfg.name!r} has no {split} pairs")
    np.save(tmp / f"{split}.rows.npy", rows[split])
  files.write_atomically(tmp / "meta.json", json.dumps(
      {"identity": identity, "format": FORMAT, "pairs": {s: len(rows[s]) for s in rows}},
      indent=2))
  log.info("%s: %d pairs (train %d, dev %d, test %d) written in %.1f s", cfg.name,
           len(offsets) - 1, *(len(rows[s]) for s in SPLITS), time.time() - t0)


def _without_sources(train: np.ndarray, digests: bytearray, held_out: bytearray,
                     splits: list) -> np.ndarray:
  """The `train` rows whose source is not among the `held_out` sources (the given dev
  and test files'), compared by SHA-1; the dropped ones counted in a warning."""
  train_sources = np.frombuffer(bytes(digests), "S20")[train]
  seen = np.isin(train_sources, np.frombuffer(bytes(held_out), "S20"))
  if seen.any():
    log.warning("train: dropped %d of %d pairs whose source is also in dataset.%s",
                int(seen.sum()), len(train), " / ".join(f"{s}_path" for s in splits))
  return train[~seen]


def _split_by_hash(texts: Texts, digests: bytearray, dev_size: int, test_size: int) -> dict:
  """The rows of each split as `tsv.split_by_hash` orders them: by the SHA-1 of the
  source, then by the pair; dev the first `dev_size` distinct sources, test the next."""
  d = np.frombuffer(bytes(digests), np.uint8).reshape(-1, 20)
  cols = [d[:, i:i + 8].copy().view(">u8").ravel() for i in (0, 8)]
  cols.append(np.pad(d[:, 16:], ((0, 0), (0, 4))).view(">u8").ravel())
  order = np.lexsort(cols[::-1])
  keys = np.stack([c[order] for c in cols], 1)
  new = np.ones(len(order), bool)
  new[1:] = np.any(keys[1:] != keys[:-1], axis=1)
  starts = np.flatnonzero(new)
  ends = np.append(starts[1:], len(order))
  for s, e in zip(starts, ends):  # one source several times: by the pair (its target)
    if e - s > 1:
      order[s:e] = sorted(order[s:e], key=lambda r: texts.pair(int(r)))
  if dev_size + test_size >= len(starts):
    raise ValueError(f"dataset.dev_size + dataset.test_size = {dev_size + test_size} leaves "
                     f"no training pairs out of {len(starts)} distinct sources")
  source_rank = np.cumsum(new) - 1
  dev, test = source_rank < dev_size, (source_rank >= dev_size) & (
      source_rank < dev_size + test_size)
  return {"dev": order[dev], "test": order[test], "train": order[~dev & ~test]}
