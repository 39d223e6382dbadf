"""Datasets by name, vocabularies and deterministic, resumable batches, read from
the data prepared once (`data.prepare`)."""

import dataclasses
import logging

import numpy as np

from seq2seq_jax.data import prepare as preparing
from seq2seq_jax.data.ragged import RaggedTokens
from seq2seq_jax.data.sampling import SubwordSampler
from seq2seq_jax.data.sources import (  # noqa: F401
  corpus_path,
  dataset_names,
  is_dataset_name,
  split_files,
)
from seq2seq_jax.data.vocab import SentencePieceVocab, Vocab, build_vocab, load_vocab  # noqa: F401
from seq2seq_jax.tokens import PAD_ID

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class Dataset:
  """Text pairs of each split, their vocabularies and token arrays."""
  name: str
  texts: dict  # split -> pairs (source, target): train read from disk when asked for
  # (the splits: SPLITS, then `extra_dev`'s)
  src_vocab: Vocab
  tgt_vocab: Vocab
  # split -> (src, tgt): train `RaggedTokens` (memory-mapped, read as [N, width]
  # arrays), dev and test padded int32 arrays, each split its own widths
  arrays: dict
  prepared: preparing.Prepared | None = None

  @property
  def extra_dev(self) -> list[str]:
    """The corpus's other dev sets (`dataset.dev_path`'s files after the first),
    evaluated beside `dev`."""
    return [s for s in self.texts if s not in SPLITS]


def load(cfg, src_vocab: Vocab | None = None, tgt_vocab: Vocab | None = None) -> Dataset:
  """Loads `cfg.name` (a `config.dataset` section) from its prepared data, made
  first where missing; vocabularies are built on train unless given."""
  prepared = preparing.prepare(cfg, src_vocab, tgt_vocab)
  texts, arrays = {}, {}
  for split in preparing.splits_of(prepared.texts):  # SPLITS, then extra dev sets
    rows = preparing.read_rows(prepared, split)
    src = preparing.read_tokens(prepared, split, "src")
    tgt = preparing.read_tokens(prepared, split, "tgt")
    if split == "train":  # training drops its long pairs; dev and test are cut
      kept = _kept(cfg, src.lengths, tgt.lengths)
      if not kept.all():  # else the rows and starts stay memory-mapped, not copied
        rows, src, tgt = rows[kept].astype(np.int32), src.select(kept), tgt.select(kept)
      texts[split] = preparing.Texts(prepared.texts, rows)
      arrays[split] = (src, tgt)
      continue
    texts[split] = list(preparing.Texts(prepared.texts, rows))
    src_len = _cut(split, src.lengths, cfg.max_src_len, "source", "max_src_len")
    tgt_len = _cut(split, tgt.lengths, cfg.max_tgt_len, "target", "max_tgt_len")
    arrays[split] = (src.take(np.arange(len(src)), src_len),
                     tgt.take(np.arange(len(tgt)), tgt_len))
  return Dataset(cfg.name, texts, prepared.src_vocab, prepared.tgt_vocab, arrays, prepared)


def _kept(cfg, src_lengths: np.ndarray, tgt_lengths: np.ndarray) -> np.ndarray:
  """The training pairs within the length limits; more dropped than
  `dataset.max_dropped_fraction` is an error (a tokenizer gone wrong, not long lines)."""
  max_src, max_tgt = cfg.max_src_len, cfg.max_tgt_len
  kept = np.ones(len(src_lengths), bool)
  if max_src:
    kept &= src_lengths <= max_src
  if max_tgt:
    kept &= tgt_lengths <= max_tgt
  dropped = int(len(kept) - kept.sum())
  if not dropped:
    return kept
  if not kept.any():
    raise ValueError(f"train: no pair fits dataset.max_src_len={max_src} / "
                     f"max_tgt_len={max_tgt}")
  share = dropped / len(kept)
  if share > cfg.max_dropped_fraction:
    raise ValueError(
        f"train: {dropped} of {len(kept)} pairs ({100 * share:.1f}%) are longer than "
        f"dataset.max_src_len={max_src} / max_tgt_len={max_tgt} tokens, more than "
        f"dataset.max_dropped_fraction={cfg.max_dropped_fraction}: check the tokenizer "
        "(`python -m seq2seq_jax.data stats` shows tokens a word), raise the limits, or "
        "allow it with a larger dataset.max_dropped_fraction")
  log.warning("train: dropped %d of %d pairs longer than dataset.max_src_len=%d / "
              "max_tgt_len=%d", dropped, len(kept), max_src, max_tgt)
  return kept


def _cut(split: str, lengths: np.ndarray, limit: int, side: str, field: str) -> int:
  """The width of a split's token arrays: its longest sentence, at most `limit`.
  A dev or test sentence over it is cut to it, and counted: one stray long line
  would otherwise widen every evaluation batch and stall decoding (its reference,
  the text, stays whole). Training has no such sentence left (`_kept`)."""
  longest = int(lengths.max())
  if not limit or longest <= limit:
    return longest
  log.warning("%s: %d of %d %ss longer than dataset.%s=%d are cut to it for evaluation "
              "(the longest has %d tokens; the references stay whole)", split,
              int(np.sum(lengths > limit)), len(lengths), side, field, limit, longest)
  return limit


class TrainBatches:
  """Batch `i` of training is a pure function of (seed, i), so a resumed run
  reads exactly the batches it would have read, and the iterator's position
  is just the step.

  Without `boundaries`: shuffled epochs of full-width batches, the remainder
  of each epoch dropped. With `boundaries` (e.g. `(10, 20, 40)`): each pair
  goes to the smallest bucket that holds both its sides, batches are cut to
  the bucket's width (so jit compiles one program per bucket), every pair
  appears exactly once per epoch (a bucket's last batch is filled with
  all-padding rows, which carry no loss), and the batch order is shuffled.

  A batch holds `batch_size` rows, or with `batch_tokens` as many rows as keep
  rows x width (the bucket's, the wider side's, padding included) within it, a
  multiple of `rows_multiple` (the devices it is split over); `micro_batches` K
  makes each batch K of those (one update's micro-batches, rows in order). A
  `sampler` (`sampling.SubwordSampler`) draws the rows' segmentations anew.
  """

  def __init__(self, src: np.ndarray, tgt: np.ndarray, batch_size: int, seed: int,
               boundaries=(), batch_tokens: int = 0, micro_batches: int = 1,
               rows_multiple: int = 1, sampler=None):
    # Padded arrays (tests, tools) are read as the prepared data is.
    src, tgt = (x if isinstance(x, RaggedTokens) else RaggedTokens.from_padded(x)
                for x in (src, tgt))
    self.src, self.tgt, self.seed, self.sampler = src, tgt, seed, sampler
    self._epoch, self._plan = -1, None
    width = max(src.shape[1], tgt.shape[1])
    if not boundaries:
      self.buckets = None
      self.batch_size = _rows(batch_size, batch_tokens, width, rows_multiple) * micro_batches
      if self.batch_size > len(src):
        asked = (f"train.batch_tokens={batch_tokens} ({self.batch_size // micro_batches} rows "
                 f"of {width} tokens)" if batch_tokens else f"train.batch_size={batch_size}")
        if micro_batches > 1:
          asked += f" x train.grad_accum_steps={micro_batches}"
        raise ValueError(f"{asked} is larger than the {len(src)} training pairs")
      self.per_epoch = len(src) // self.batch_size
      return
    bounds = sorted({int(b) for b in boundaries if 0 < int(b) < width} | {width})
    lengths = np.maximum(src.lengths, tgt.lengths)
    which = np.searchsorted(bounds, lengths)  # the first bound >= length
    # int32 row numbers (and below): 4 bytes a pair, a corpus of 40M pairs in 160 MB
    self.buckets = [(np.flatnonzero(which == i).astype(np.int32), min(b, src.shape[1]),
                     min(b, tgt.shape[1])) for i, b in enumerate(bounds)]
    self.buckets = [b for b in self.buckets if len(b[0])]
    self.bucket_rows = [_rows(batch_size, batch_tokens, max(s, t), rows_multiple) * micro_batches
                        for _, s, t in self.buckets]
    self.batch_size = max(self.bucket_rows)
    if not batch_tokens and batch_size > len(src):
      raise ValueError(f"train.batch_size={batch_size} is larger than the "
                       f"{len(src)} training pairs")
    self.per_epoch = sum(-(-len(rows) // n) for (rows, _, _), n in zip(self.buckets,
                                                                         self.bucket_rows))

  @classmethod
  def from_config(cls, config, dataset: Dataset, rows_multiple: int = 1) -> "TrainBatches":
    """The batches of a run's `config` (its seed, `train.batch_size` / `batch_tokens`,
    `grad_accum_steps`, `dataset.bucket_boundaries`, `subword_alpha`) over the
    training pairs of `dataset`."""
    tc, cfg = config.train, config.dataset
    sampler = None
    if cfg.subword_alpha:
      vocabs = (dataset.src_vocab, dataset.tgt_vocab)
      if not any(v.kind == "sentencepiece" for v in vocabs):
        raise ValueError(f"dataset.subword_alpha={cfg.subword_alpha} samples SentencePiece "
                         "segmentations: set dataset.tokenizer=sentencepiece")
      sampler = SubwordSampler(dataset.texts["train"], *vocabs, cfg.subword_alpha,
                               cfg.subword_nbest, config.seed)
    return cls(*dataset.arrays["train"], tc.batch_size, config.seed, cfg.bucket_boundaries,
               tc.batch_tokens, tc.grad_accum_steps, rows_multiple, sampler)

  @property
  def shapes(self) -> list[tuple[int, int]]:
    """The (src_len, tgt_len) of every batch there can be."""
    if self.buckets is None:
      return [(self.src.shape[1], self.tgt.shape[1])]
    return [(s, t) for _, s, t in self.buckets]

  def _epoch_plan(self, epoch: int):
    rng = np.random.default_rng([self.seed, epoch])
    if self.buckets is None:
      perm = rng.permutation(len(self.src)).astype(np.int32)
      return [(perm[i * self.batch_size:(i + 1) * self.batch_size], None)
              for i in range(self.per_epoch)]
    plan = []
    for index, ((rows, _, _), size) in enumerate(zip(self.buckets, self.bucket_rows)):
      rows = rng.permutation(rows)
      for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        plan.append((np.pad(chunk, (0, size - len(chunk)), constant_values=-1), index))
    return [plan[i] for i in rng.permutation(len(plan))]

  def __call__(self, position: int, part: slice | None = None) -> dict:
    """Batch `position`, or only its rows `part` (a process's share of a global batch)."""
    epoch, index = divmod(position, self.per_epoch)
    if epoch != self._epoch:
      self._epoch, self._plan = epoch, self._epoch_plan(epoch)
    rows, bucket = self._plan[index]
    if part is not None:
      rows = rows[part]
    if bucket is None:
      src, tgt = self.src.take(rows), self.tgt.take(rows)
    else:
      _, src_len, tgt_len = self.buckets[bucket]
      real = rows >= 0
      src = np.where(real[:, None], self.src.take(np.maximum(rows, 0), src_len), PAD_ID)
      tgt = np.where(real[:, None], self.tgt.take(np.maximum(rows, 0), tgt_len), PAD_ID)
    if self.sampler is not None:
      src, tgt = self.sampler(rows, epoch, [src, tgt])
    return {"src": src.astype(np.int32), "tgt": tgt.astype(np.int32)}


def _rows(batch_size: int, batch_tokens: int, width: int, multiple: int) -> int:
  """Rows of a (micro-)batch: `batch_size`, or with `batch_tokens` the most rows of
  `width` tokens within it, a multiple of `multiple`."""
  if not batch_tokens:
    return batch_size
  rows = batch_tokens // width // multiple * multiple
  if not rows:
    rows_of = f"{multiple} rows" if multiple > 1 else "one row"
    raise ValueError(f"train.batch_tokens={batch_tokens} holds less than {rows_of} of the "
                     f"longest training pairs ({width} tokens, padding included): use at least "
                     f"{width * multiple}, or lower dataset.max_src_len / max_tgt_len")
  return rows
