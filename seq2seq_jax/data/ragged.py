"""Sentences of token ids of different lengths, stored flat: one token array and
the offset of each sentence in it (fairseq's MMapIndexedDataset has the same
shape). Prepared data keeps them memory-mapped on disk, so a corpus of any size
costs a training process only the pages its batches touch.

`RaggedTokens` reads like the padded `[N, width]` int32 array the code before
it held in memory (`len`, `shape`, `x[rows]`, `x[rows, :w]`, iteration,
`np.asarray`), built only for the rows asked for.
"""

import mmap
from pathlib import Path

import numpy as np

from seq2seq_jax.tokens import PAD_ID


class RaggedTokens:
  """Sentence `i` is `tokens[starts[i]:starts[i] + lengths[i]]`; rows read back
  padded with `PAD_ID` to `width` (the longest sentence unless cut shorter)."""

  def __init__(self, tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
               width: int | None = None):
    self.tokens, self.starts, self.lengths = tokens, starts, lengths
    longest = int(lengths.max()) if len(lengths) else 0
    self.width = longest if width is None else min(int(width), longest)

  @classmethod
  def from_offsets(cls, tokens, offsets, width: int | None = None) -> "RaggedTokens":
    """From `offsets` ([N + 1]; memory-mapped, the starts stay on disk): the
    lengths, 4 bytes a sentence, are all a corpus costs in memory."""
    return cls(tokens, offsets[:-1], np.diff(offsets).astype(np.int32), width)

  @classmethod
  def from_padded(cls, array: np.ndarray) -> "RaggedTokens":
    """The rows of a padded array, each up to its last non-padding token (a
    width kept as it was, as the padded array's)."""
    array = np.asarray(array)
    lengths = np.sum(array != PAD_ID, axis=1)
    keep = np.arange(array.shape[1])[None, :] < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    out = cls.from_offsets(array[keep].astype(np.int32), offsets)
    out.width = array.shape[1]
    return out

  def select(self, rows, width: int | None = None) -> "RaggedTokens":
    """The sentences `rows` (a boolean mask or indices), nothing copied but the index."""
    return RaggedTokens(self.tokens, self.starts[rows], self.lengths[rows], width)

  def __len__(self) -> int:
    return len(self.lengths)

  @property
  def shape(self) -> tuple[int, int]:
    return (len(self), self.width)

  def take(self, rows, width: int | None = None) -> np.ndarray:
    """`[len(rows), width]` int32: the sentences `rows`, cut to `width`, padded."""
    rows = np.asarray(rows, np.int64)
    width = self.width if width is None else int(width)
    lengths = np.minimum(self.lengths[rows], width)
    columns = np.arange(width)
    inside = columns[None, :] < lengths[:, None]
    where = np.where(inside, self.starts[rows][:, None] + columns[None, :], 0)
    if not len(self.tokens):
      return np.full((len(rows), width), PAD_ID, np.int32)
    return np.where(inside, self.tokens[where], PAD_ID).astype(np.int32)

  def __getitem__(self, key):
    width = None
    if isinstance(key, tuple):  # x[rows, :w]
      key, columns = key
      if not (isinstance(columns, slice) and columns.start in (None, 0) and columns.step
              in (None, 1)):
        raise IndexError("RaggedTokens takes rows and a leading slice of columns")
      width = self.width if columns.stop is None else min(columns.stop, self.width)
    if isinstance(key, (int, np.integer)):
      return self.take([int(key) % len(self)], width)[0]
    if isinstance(key, slice):
      key = np.arange(len(self))[key]
    return self.take(key, width)

  def __iter__(self):
    for start in range(0, len(self), 4096):
      yield from self.take(np.arange(start, min(start + 4096, len(self))))

  def __array__(self, dtype=None, copy=None):
    out = self.take(np.arange(len(self)))
    return out if dtype is None else out.astype(dtype)


def token_dtype(vocab_size: int):
  """The smallest unsigned type that holds every id."""
  return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def load(directory: Path, name: str, dtype) -> RaggedTokens:
  """`NAME.tokens` (raw ids, memory-mapped) and `NAME.offsets.npy` ([N + 1])."""
  offsets = np.load(directory / f"{name}.offsets.npy", mmap_mode="r")
  if offsets[-1] == 0:  # mmap refuses an empty file
    return RaggedTokens.from_offsets(np.zeros(0, dtype), offsets)
  with open(directory / f"{name}.tokens", "rb") as f:  # the map outlives the file object
    tokens = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
  # Batches read random sentences: the kernel's read-ahead would bring in (and map
  # into this process) 128 KB around each one, most of the file within an epoch.
  tokens.madvise(mmap.MADV_RANDOM)
  return RaggedTokens.from_offsets(np.frombuffer(tokens, dtype), offsets)
