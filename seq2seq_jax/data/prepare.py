"""Data prepared once (`python -m seq2seq_jax.data prepare`, or the first run that
finds it missing) and read from disk by every run after it.

Three stages, each a directory under `$SEQ2SEQ_JAX_CACHE/prepared/CORPUS/`, built
in `NAME.tmp` beside it and renamed into place when whole (a killed prepare leaves
nothing half-made that a reader could take), under a lock (two runs that need the
same stage wait for each other instead of both making it):

1. `texts/`: the corpus's pairs as one UTF-8 file (`texts.tsv`, `source<TAB>target`
   a line), the byte offset of each line, and the rows of each split in order
   (`train.rows.npy`, ...). CORPUS hashes the corpus's identity: a TSV's bytes (a
   Debian corpus: its prepared TSV) with the split sizes; a generated task's fields
   and generator code; a tfds name. The TSV split is the hash split of
   `tsv.split_by_hash`, computed over SHA-1 digests in numpy, not Python lists.
2. `vocab-KEY/`: the vocabularies, trained on the training split (sentencepiece on
   a seeded sample of `dataset.spm_input_sentence_size` sentences, all cores); KEY
   hashes the tokenizer fields.
3. `tokens-KEY/`: every pair encoded once, in shards over the cores (kept in
   `tokens-KEY.shards/` across a kill, so a rerun encodes only the missing ones),
   then concatenated into memory-mapped token arrays per split and side (`ragged`).
   KEY hashes the vocabularies themselves, so a resumed run, reading its workdir's
   vocabularies, finds the tokens its first start made. Length limits are applied
   when the tokens are read (`data.load`), so changing them encodes nothing again.
"""

import atexit
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from seq2seq_jax import faults, files
from seq2seq_jax.data import debian, ragged, sources
from seq2seq_jax.data import texts as corpus_texts
from seq2seq_jax.data.texts import Texts
from seq2seq_jax.data.vocab import build_vocab, load_vocab

log = logging.getLogger(__name__)

FORMAT = 1  # bump when a stage's files or their meaning change
SPLITS = ("train", "dev", "test")
SHARD_PAIRS = 100_000
PARALLEL_MIN_PAIRS = 50_000  # below it, encoding here beats starting worker processes


@dataclasses.dataclass
class Prepared:
  """Where a dataset's stages are, with its vocabularies and token statistics."""
  texts: Path
  tokens: Path
  src_vocab: object
  tgt_vocab: object
  stats: dict  # split -> pairs, tokens, words, longest of each side
  reused: bool  # every stage was found made: no tokenization in this process


def root() -> Path:
  return debian.cache_dir() / "prepared"


def _key(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def vocab_digest(vocab) -> str:
  return hashlib.sha256(json.dumps(vocab.to_json(), sort_keys=True).encode()).hexdigest()


def prepare(cfg, src_vocab=None, tgt_vocab=None, workers: int | None = None,
            shard_pairs: int = SHARD_PAIRS) -> Prepared:
  """The prepared stages of `cfg` (a `config.dataset`), made where missing; with
  `src_vocab`/`tgt_vocab` (a workdir's or a warm start's) its tokens are of those."""
  made = []
  identity, src_kind, tgt_kind = sources.identity(cfg)
  texts = _make(root() / _key(identity) / "texts", made,
                lambda tmp: corpus_texts.write(cfg, identity, tmp))
  if src_vocab is None or tgt_vocab is None:
    fields = {"src": cfg.tokenizer or src_kind, "tgt": cfg.tokenizer or tgt_kind,
              "vocab_size": cfg.vocab_size, "spm_model_type": cfg.spm_model_type,
              "joint": cfg.joint_vocab, "sample": cfg.spm_input_sentence_size,
              "format": FORMAT}
    vocabs = _make(texts.parent / f"vocab-{_key(fields)}", made,
                   lambda tmp: _write_vocabs(cfg, fields, texts, tmp))
    src_vocab = load_vocab(vocabs / "vocab_src.json")
    tgt_vocab = src_vocab if cfg.joint_vocab else load_vocab(vocabs / "vocab_tgt.json")
  key = _key({"src": vocab_digest(src_vocab), "tgt": vocab_digest(tgt_vocab), "format": FORMAT})
  tokens = _make(texts.parent / f"tokens-{key}", made,
                 lambda tmp: _write_tokens(texts, src_vocab, tgt_vocab, tmp, workers,
                                           shard_pairs))
  meta = files.read_json(tokens / "meta.json", keys=("stats",))
  return Prepared(texts, tokens, src_vocab, tgt_vocab, meta["stats"], not made)


# -- making a stage: whole or not at all, once ---------------------------------------


_FALLBACK: list[Path] = []


def _fallback_root() -> Path:
  """A temporary directory for stages a read-only cache cannot hold (removed at exit;
  the files a run maps stay readable until it ends)."""
  if not _FALLBACK:
    _FALLBACK.append(Path(tempfile.mkdtemp(prefix="seq2seq_jax-prepared-")))
    atexit.register(shutil.rmtree, _FALLBACK[0], True)
  return _FALLBACK[0]


@contextlib.contextmanager
def _waiting_lock(path: Path):
  """The kernel's flock on `path`, waited for (another process preparing the same)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield


def _make(directory: Path, made: list, build) -> Path:
  """`directory`, built by `build(tmp)` into `tmp` and renamed into place if missing."""
  if directory.is_dir():
    return directory
  try:
    with _waiting_lock(directory.with_name(directory.name + ".lock")):
      if directory.is_dir():  # made by the process we waited for
        return directory
      tmp = directory.with_name(directory.name + ".tmp")
      shutil.rmtree(tmp, ignore_errors=True)
      tmp.mkdir()
      try:
        build(tmp)
      except BaseException:  # a bad corpus, a stop: nothing half-made stays (shards do)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
      os.rename(tmp, directory)
  except OSError as e:
    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or \
        directory.is_relative_to(_fallback_root()):
      raise
    other = _fallback_root() / directory.relative_to(root())
    log.warning("cannot keep prepared data in the cache %s (%s): prepared in %s for this run "
                "only; set %s to a writable directory", root(), e.strerror or e, other.parent,
                debian.CACHE_ENV)
    return _make(other, made, build)
  made.append(directory)
  return directory


# -- 2. vocabularies --------------------------------------------------------------------


def _write_vocabs(cfg, fields: dict, texts: Path, tmp: Path) -> None:
  t0 = time.time()
  train = Texts(texts, np.load(texts / "train.rows.npy", mmap_mode="r"))
  sample = _sample(train, cfg.spm_input_sentence_size)
  if cfg.joint_vocab:
    if fields["src"] != fields["tgt"]:
      raise ValueError(f"dataset.joint_vocab needs one tokenizer for both sides; "
                       f"{cfg.name} has {fields['src']} sources and {fields['tgt']} targets "
                       "(set dataset.tokenizer)")
    # One vocabulary of both sides' training texts (for model.share_embeddings).
    src = tgt = build_vocab((x for pair in _of(train, sample, fields["src"]) for x in pair),
                            fields["src"], cfg)
  else:
    src = build_vocab((s for s, _ in _of(train, sample, fields["src"])), fields["src"], cfg)
    tgt = build_vocab((t for _, t in _of(train, sample, fields["tgt"])), fields["tgt"], cfg)
  src.save(tmp / "vocab_src.json")
  tgt.save(tmp / "vocab_tgt.json")
  log.info("%s: vocabularies (%s %d, %s %d tokens) made in %.1f s%s", cfg.name, src.kind,
           len(src), tgt.kind, len(tgt), time.time() - t0,
           f" (sentencepiece on {len(sample.rows)} sampled pairs)" if sample is not train else "")


def _sample(train: Texts, size: int) -> Texts:
  """`size` training pairs drawn with a fixed seed (in order), or all of them.

  Sentencepiece's own `input_sentence_size` sampling differs from process to process
  (sentencepiece 0.2.3, whatever its seed), and its model depends on how many
  distinct sentences it sees: pieces a word rose from 1.22 at 800k lines to 1.36 at
  3.2M on the synthetic corpus of `benchmarks/data.py`, its vocabulary filled with
  whole rare words. A fixed-size sample keeps it the same at every corpus size."""
  if not size or len(train) <= size:
    return train
  picked = np.sort(np.random.default_rng(0).choice(len(train), size, replace=False))
  return Texts(train.directory, np.asarray(train.rows[picked]))


def _of(train: Texts, sample: Texts, kind: str) -> Texts:
  """The pairs a vocabulary of `kind` is made from: sentencepiece's sample, else all."""
  return sample if kind == "sentencepiece" else train


# -- 3. tokens --------------------------------------------------------------------------


def _write_tokens(texts: Path, src_vocab, tgt_vocab, tmp: Path, workers, shard_pairs) -> None:
  t0 = time.time()
  shards = tmp.with_name(tmp.name[:-len(".tmp")] + ".shards")
  size = shards / "shard_pairs"
  if size.exists() and size.read_text() != str(shard_pairs):  # cut otherwise: not reused
    shutil.rmtree(shards)
  shards.mkdir(exist_ok=True)
  files.write_atomically(size, str(shard_pairs))
  for side, vocab in (("src", src_vocab), ("tgt", tgt_vocab)):
    if not (shards / f"vocab_{side}.json").exists():
      vocab.save(shards / f"vocab_{side}.json")
  jobs, splits = [], splits_of(texts)
  for split in splits:
    n = len(np.load(texts / f"{split}.rows.npy", mmap_mode="r"))
    jobs += [(str(texts), str(shards), split, i, start, min(start + shard_pairs, n))
             for i, start in enumerate(range(0, n, shard_pairs))]
  missing = [j for j in jobs if not (shards / _shard_name(j[2], j[3])).exists()]
  pairs = sum(j[5] - j[4] for j in missing)
  workers = min(workers or os.cpu_count() or 1, len(missing))
  if pairs < PARALLEL_MIN_PAIRS:
    workers = 1
  log.info("encoding %d pairs in %d shards (%d already made) with %d process%s ...", pairs,
           len(missing), len(jobs) - len(missing), workers, "es" if workers > 1 else "")
  if workers > 1:
    _encode_in_workers(missing, workers)
  else:
    for job in missing:
      encode_shard(job)
  stats = {split: _concatenate(shards, tmp, split, [j for j in jobs if j[2] == split])
           for split in splits}
  files.write_atomically(tmp / "meta.json", json.dumps({"format": FORMAT, "stats": stats},
                                                       indent=2))
  shutil.rmtree(shards)
  log.info("encoded in %.1f s: %s", time.time() - t0, pieces_line(stats["train"]))


def pieces_per_word(stats: dict) -> tuple[float, float]:
  """Tokens a whitespace word of each side (the target's <eos> not counted)."""
  return (stats["src_tokens"] / max(stats["src_words"], 1),
          (stats["tgt_tokens"] - stats["pairs"]) / max(stats["tgt_words"], 1))


def pieces_line(stats: dict) -> str:
  src, tgt = pieces_per_word(stats)
  return f"{src:.2f} source and {tgt:.2f} target tokens a word"


def _encode_in_workers(jobs: list, workers: int) -> None:
  """`jobs` spread over `workers` processes of `encode_worker` (fresh interpreters:
  neither a fork of a process running jax's threads nor multiprocessing's re-import
  of the caller's main module). A stop ends them; the shards they finished stay."""
  procs = []
  try:
    for k in range(workers):
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "seq2seq_jax.data.encode_worker", json.dumps(jobs[k::workers])],
          stderr=subprocess.PIPE, text=True))
    for proc in procs:
      _, err = proc.communicate()
      if proc.returncode:
        lines = err.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise RuntimeError(f"encoding a shard failed: {lines[-1]}")
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()


def _shard_name(split: str, index: int) -> str:
  return f"{split}.{index:05d}.npz"


_VOCABS: dict = {}  # a worker's vocabularies, loaded once


def encode_shard(job) -> None:
  texts_dir, shards, split, index, start, end = job
  texts_dir, shards = Path(texts_dir), Path(shards)
  if shards not in _VOCABS:
    _VOCABS[shards] = [load_vocab(shards / f"vocab_{s}.json") for s in ("src", "tgt")]
  src_vocab, tgt_vocab = _VOCABS[shards]
  texts = Texts(texts_dir, np.load(texts_dir / f"{split}.rows.npy", mmap_mode="r")[start:end])
  pairs = list(texts)
  out = {}
  for side, vocab, eos, column in (("src", src_vocab, False, 0), ("tgt", tgt_vocab, True, 1)):
    sentences = [p[column] for p in pairs]
    ids = vocab.encode_batch(sentences, eos=eos)
    out[f"{side}_lengths"] = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    out[f"{side}_tokens"] = np.fromiter((t for x in ids for t in x),
                                        ragged.token_dtype(len(vocab)),
                                        int(out[f"{side}_lengths"].sum()))
    out[f"{side}_words"] = np.int64(sum(len(s.split()) for s in sentences))
  path = shards / _shard_name(split, index)
  tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
  np.savez(tmp, **out)
  os.replace(tmp, path)
  faults.point(f"shard:{split}", index)


def _concatenate(shards: Path, tmp: Path, split: str, jobs: list) -> dict:
  """One token file and offsets per side of `split`, from its shards in order."""
  stats = {"pairs": 0}
  for side in ("src", "tgt"):
    lengths = []
    words = 0
    with open(tmp / f"{split}.{side}.tokens", "wb") as out:
      for job in jobs:
        with np.load(shards / _shard_name(split, job[3])) as shard:
          shard[f"{side}_tokens"].tofile(out)  # of `ragged.token_dtype` already
          lengths.append(shard[f"{side}_lengths"])
          words += int(shard[f"{side}_words"])
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    np.save(tmp / f"{split}.{side}.offsets.npy",
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    stats.update({"pairs": len(lengths), f"{side}_tokens": int(lengths.sum()),
                  f"{side}_words": words, f"{side}_longest": int(lengths.max(initial=0))})
  return stats  # the target's counts hold one <eos> a sentence


def read_tokens(prepared: Prepared, split: str, side: str) -> ragged.RaggedTokens:
  vocab = prepared.src_vocab if side == "src" else prepared.tgt_vocab
  return ragged.load(prepared.tokens, f"{split}.{side}", ragged.token_dtype(len(vocab)))


def splits_of(texts: Path) -> list[str]:
  """The splits of a `texts/` stage: train, dev, test, then a corpus's extra dev sets."""
  pairs = files.read_json(texts / "meta.json", keys=("pairs",))["pairs"]
  return list(SPLITS) + sorted(s for s in pairs if s not in SPLITS)


def read_rows(prepared: Prepared, split: str) -> np.ndarray:
  return np.load(prepared.texts / f"{split}.rows.npy", mmap_mode="r")

