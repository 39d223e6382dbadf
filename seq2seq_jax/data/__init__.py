"""Datasets by name, vocabularies and deterministic, resumable batches."""

import dataclasses
import hashlib
import logging
import os

import numpy as np

from seq2seq_jax.data import debian, synthetic, tfds_source, tsv
from seq2seq_jax.data.vocab import SentencePieceVocab, Vocab, load_vocab
from seq2seq_jax.tokens import PAD_ID

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


def dataset_names() -> tuple[str, ...]:
  return (*synthetic.TASKS, *(f"debian:{p}" for p in debian.CORPORA), "tsv:PATH",
          "tfds:NAME[/CONFIG]")


def is_dataset_name(name: str) -> bool:
  return name in synthetic.TASKS or name.startswith(("tsv:", "tfds:")) or (
      name.startswith("debian:") and name[len("debian:"):] in debian.CORPORA)


def corpus_path(name: str):
  """The TSV file behind `debian:PAIR` (prepared on first use) or `tsv:PATH`; else None."""
  if name.startswith("debian:"):
    return debian.prepare(name[len("debian:"):])
  if name.startswith("tsv:"):
    return name[len("tsv:"):]
  return None


def load_texts(cfg) -> tuple[dict, str, str]:
  """Text pairs by split for `cfg.name`, and the tokenizer of each side."""
  if cfg.name in synthetic.TASKS:
    loader, src_kind, tgt_kind = synthetic.TASKS[cfg.name]
    return loader(cfg), src_kind, tgt_kind
  if cfg.name.startswith("tfds:"):
    texts = tfds_source.load_pairs(cfg.name[len("tfds:"):],
                                   cfg.data_dir,
                                   cfg.download)
    return texts, "word", "word"
  path = corpus_path(cfg.name)
  if path is None:
    raise ValueError(f"unknown dataset.name {cfg.name!r}; valid datasets: "
                     f"{', '.join(dataset_names())}")
  pairs, _ = tsv.read_pairs(path)
  return tsv.split_by_hash(pairs, cfg.dev_size, cfg.test_size), "word", "word"


@dataclasses.dataclass
class Dataset:
  """Text pairs of each split, their vocabularies and padded id arrays."""
  name: str
  texts: dict  # split -> list of (source, target)
  src_vocab: Vocab
  tgt_vocab: Vocab
  arrays: dict  # split -> (src [N, src_len], tgt [N, tgt_len]) int32, each split its own widths


def _encode(pairs, src_vocab, tgt_vocab, src_len, tgt_len):
  src = np.full((len(pairs), src_len), PAD_ID, np.int32)
  tgt = np.full((len(pairs), tgt_len), PAD_ID, np.int32)
  for i, (s, t) in enumerate(pairs):
    s_ids, t_ids = src_vocab.encode(s)[:src_len], tgt_vocab.encode(t, eos=True)[:tgt_len]
    src[i, :len(s_ids)] = s_ids
    tgt[i, :len(t_ids)] = t_ids
  return src, tgt


def _filter_long(split, pairs, src_vocab, tgt_vocab, max_src, max_tgt):
  """Drops pairs over the configured maximum lengths, and says how many."""
  if not max_src and not max_tgt:
    return pairs
  kept = [p for p in pairs
          if (not max_src or len(src_vocab.encode(p[0])) <= max_src)
          and (not max_tgt or len(tgt_vocab.encode(p[1], eos=True)) <= max_tgt)]
  if len(kept) < len(pairs):
    log.warning("%s: dropped %d of %d pairs longer than dataset.max_src_len=%d / "
                    "max_tgt_len=%d", split, len(pairs) - len(kept), len(pairs), max_src, max_tgt)
  if not kept:
    raise ValueError(f"{split}: no pair fits dataset.max_src_len={max_src} / "
                     f"max_tgt_len={max_tgt}")
  return kept


def build_vocab(texts: list[str], kind: str, cfg):
  """A word / char `Vocab`, or a sentencepiece model cached by a hash of texts + settings."""
  size = cfg.vocab_size
  if kind != "sentencepiece":
    return Vocab.build(texts, kind, size)
  model_type = cfg.spm_model_type
  if size < 8:
    raise ValueError(f"dataset.vocab_size must be >= 8 for sentencepiece, got {size}")
  digest = hashlib.sha256()
  digest.update(f"{size}|{model_type}|".encode())
  for text in texts:
    digest.update(text.encode() + b"\n")
  path = debian.cache_dir() / "sentencepiece" / f"{digest.hexdigest()[:24]}.json"
  if path.exists():
    return load_vocab(path)
  vocab = SentencePieceVocab.train(texts, size, model_type)
  # Sweep members may train the same model at once: each writes its own file and
  # renames it, so none ever reads a half-written one.
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    vocab.save(tmp)
    os.replace(tmp, path)
  except OSError as e:  # a read-only or full cache: the model is still good, only not kept
    log.warning("could not keep the sentencepiece model in the cache %s (%s): the next run "
                "trains it again; set %s to a writable directory", path.parent,
                e.strerror or e, debian.CACHE_ENV)
  return vocab


def load(cfg, src_vocab: Vocab | None = None, tgt_vocab: Vocab | None = None) -> Dataset:
  """Loads `cfg.name` (a `config.dataset` section); builds vocabularies on train."""
  texts, src_kind, tgt_kind = load_texts(cfg)
  for split in SPLITS:
    if not texts[split]:
      raise ValueError(f"dataset {cfg.name!r} has no {split} pairs")
  kind = cfg.tokenizer
  src_kind, tgt_kind = (kind, kind) if kind else (src_kind, tgt_kind)
  if cfg.joint_vocab and src_vocab is None:
    if src_kind != tgt_kind:
      raise ValueError(f"dataset.joint_vocab needs one tokenizer for both sides; "
                       f"{cfg.name} has {src_kind} sources and {tgt_kind} targets (set "
                       f"dataset.tokenizer)")
    # One vocabulary of both sides' training texts (for model.share_embeddings).
    src_vocab = tgt_vocab = build_vocab([x for pair in texts["train"] for x in pair],
                                        src_kind, cfg)
  src_vocab = src_vocab or build_vocab([s for s, _ in texts["train"]], src_kind, cfg)
  tgt_vocab = tgt_vocab or build_vocab([t for _, t in texts["train"]], tgt_kind, cfg)
  # Training drops its long pairs; dev and test keep theirs, cut to the limits.
  texts["train"] = _filter_long("train", texts["train"], src_vocab, tgt_vocab,
                                cfg.max_src_len, cfg.max_tgt_len)
  arrays = {}
  for split in SPLITS:  # each split padded to its own longest pair
    src_lengths = [len(src_vocab.encode(s)) for s, _ in texts[split]]
    tgt_lengths = [len(tgt_vocab.encode(t, eos=True)) for _, t in texts[split]]
    src_len, tgt_len = _cut(split, src_lengths, cfg.max_src_len, "source", "max_src_len"), \
        _cut(split, tgt_lengths, cfg.max_tgt_len, "target", "max_tgt_len")
    arrays[split] = _encode(texts[split], src_vocab, tgt_vocab, src_len, tgt_len)
  return Dataset(cfg.name, texts, src_vocab, tgt_vocab, arrays)


def _cut(split: str, lengths: list[int], limit: int, side: str, field: str) -> int:
  """The width of a split's token arrays: its longest sentence, at most `limit`.
  A dev or test sentence over it is cut to it, and counted: one stray long line
  would otherwise widen every evaluation batch and stall decoding (its reference,
  the text, stays whole). Training has no such sentence left (`_filter_long`)."""
  longest = max(lengths)
  if not limit or longest <= limit:
    return longest
  log.warning("%s: %d of %d %ss longer than dataset.%s=%d are cut to it for evaluation "
              "(the longest has %d tokens; the references stay whole)", split,
              sum(n > limit for n in lengths), len(lengths), side, field, limit, longest)
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
  """

  def __init__(self, src: np.ndarray, tgt: np.ndarray, batch_size: int, seed: int,
               boundaries=()):
    if batch_size > len(src):
      raise ValueError(f"train.batch_size={batch_size} is larger than the "
                       f"{len(src)} training pairs")
    self.src, self.tgt, self.batch_size, self.seed = src, tgt, batch_size, seed
    self._epoch, self._plan = -1, None
    if not boundaries:
      self.buckets = None
      self.per_epoch = len(src) // batch_size
      return
    width = max(src.shape[1], tgt.shape[1])
    bounds = sorted({int(b) for b in boundaries if 0 < int(b) < width} | {width})
    lengths = np.maximum(np.sum(src != PAD_ID, 1), np.sum(tgt != PAD_ID, 1))
    which = np.searchsorted(bounds, lengths)  # the first bound >= length
    self.buckets = [(np.flatnonzero(which == i), min(b, src.shape[1]), min(b, tgt.shape[1]))
                    for i, b in enumerate(bounds)]
    self.buckets = [b for b in self.buckets if len(b[0])]
    self.per_epoch = sum(-(-len(rows) // batch_size) for rows, _, _ in self.buckets)

  @property
  def shapes(self) -> list[tuple[int, int]]:
    """The (src_len, tgt_len) of every batch there can be."""
    if self.buckets is None:
      return [(self.src.shape[1], self.tgt.shape[1])]
    return [(s, t) for _, s, t in self.buckets]

  def _epoch_plan(self, epoch: int):
    rng = np.random.default_rng([self.seed, epoch])
    if self.buckets is None:
      perm = rng.permutation(len(self.src))
      return [(perm[i * self.batch_size:(i + 1) * self.batch_size], None)
              for i in range(self.per_epoch)]
    plan = []
    for index, (rows, _, _) in enumerate(self.buckets):
      rows = rng.permutation(rows)
      for start in range(0, len(rows), self.batch_size):
        chunk = rows[start:start + self.batch_size]
        plan.append((np.pad(chunk, (0, self.batch_size - len(chunk)), constant_values=-1),
                     index))
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
      return {"src": self.src[rows], "tgt": self.tgt[rows]}
    _, src_len, tgt_len = self.buckets[bucket]
    real = rows >= 0
    src = np.where(real[:, None], self.src[np.maximum(rows, 0), :src_len], PAD_ID)
    tgt = np.where(real[:, None], self.tgt[np.maximum(rows, 0), :tgt_len], PAD_ID)
    return {"src": src.astype(np.int32), "tgt": tgt.astype(np.int32)}
