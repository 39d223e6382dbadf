"""Datasets by name, vocabularies and deterministic, resumable batches."""

import dataclasses
import logging

import numpy as np

from seq2seq_jax.data import debian, synthetic, tsv
from seq2seq_jax.data.vocab import Vocab
from seq2seq_jax.tokens import PAD_ID

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


def dataset_names() -> tuple[str, ...]:
  return (*synthetic.TASKS, *(f"debian:{p}" for p in debian.CORPORA), "tsv:PATH")


def is_dataset_name(name: str) -> bool:
  return name in synthetic.TASKS or name.startswith("tsv:") or (
      name.startswith("debian:") and name[len("debian:"):] in debian.CORPORA)


def load_texts(cfg) -> tuple[dict, str, str]:
  """Text pairs by split for `cfg.name`, and the tokenizer of each side."""
  if cfg.name in synthetic.TASKS:
    loader, src_kind, tgt_kind = synthetic.TASKS[cfg.name]
    return loader(cfg), src_kind, tgt_kind
  if cfg.name.startswith("debian:"):
    path = debian.prepare(cfg.name[len("debian:"):])
  elif cfg.name.startswith("tsv:"):
    path = cfg.name[len("tsv:"):]
  else:
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
  arrays: dict  # split -> (src [N, max_src_len], tgt [N, max_tgt_len]) int32

  @property
  def max_src_len(self) -> int:
    return self.arrays["train"][0].shape[1]

  @property
  def max_tgt_len(self) -> int:
    return self.arrays["train"][1].shape[1]


def _encode(pairs, src_vocab, tgt_vocab, src_len, tgt_len):
  src = np.full((len(pairs), src_len), PAD_ID, np.int32)
  tgt = np.full((len(pairs), tgt_len), PAD_ID, np.int32)
  for i, (s, t) in enumerate(pairs):
    s_ids, t_ids = src_vocab.encode(s), tgt_vocab.encode(t, eos=True)
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


def load(cfg, src_vocab: Vocab | None = None, tgt_vocab: Vocab | None = None) -> Dataset:
  """Loads `cfg.name` (a `config.dataset` section); builds vocabularies on train."""
  texts, src_kind, tgt_kind = load_texts(cfg)
  for split in SPLITS:
    if not texts[split]:
      raise ValueError(f"dataset {cfg.name!r} has no {split} pairs")
  max_vocab = cfg.get("max_vocab", 0)
  src_vocab = src_vocab or Vocab.build((s for s, _ in texts["train"]), src_kind, max_vocab)
  tgt_vocab = tgt_vocab or Vocab.build((t for _, t in texts["train"]), tgt_kind, max_vocab)
  texts = {split: _filter_long(split, texts[split], src_vocab, tgt_vocab,
                               cfg.max_src_len, cfg.max_tgt_len) for split in SPLITS}
  src_len = max(len(src_vocab.encode(s)) for split in SPLITS for s, _ in texts[split])
  tgt_len = max(len(tgt_vocab.encode(t, eos=True)) for split in SPLITS for _, t in texts[split])
  arrays = {split: _encode(texts[split], src_vocab, tgt_vocab, src_len, tgt_len)
            for split in SPLITS}
  return Dataset(cfg.name, texts, src_vocab, tgt_vocab, arrays)


class TrainBatches:
  """Batch `i` of training is a pure function of (seed, i): shuffled epochs
  without replacement, so a resumed run reads exactly the batches it would
  have read, and the iterator's position is just the step."""

  def __init__(self, src: np.ndarray, tgt: np.ndarray, batch_size: int, seed: int):
    if batch_size > len(src):
      raise ValueError(f"train.batch_size={batch_size} is larger than the "
                       f"{len(src)} training pairs")
    self.src, self.tgt, self.batch_size, self.seed = src, tgt, batch_size, seed
    self.per_epoch = len(src) // batch_size
    self._epoch, self._perm = -1, None

  def __call__(self, position: int) -> dict:
    epoch, index = divmod(position, self.per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.src))
    rows = self._perm[index * self.batch_size:(index + 1) * self.batch_size]
    return {"src": self.src[rows], "tgt": self.tgt[rows]}
