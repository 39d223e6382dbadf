"""Word- and character-level vocabularies; the special tokens live in `tokens`."""

import base64
from collections import Counter
import io
import json
import re

import numpy as np
import sentencepiece as spm

from seq2seq_jax import files
from seq2seq_jax.tokens import EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID

TOKENIZERS = ("word", "char", "sentencepiece")
# Sentencepiece's model depends on its thread count (each thread sums its share of
# the corpus): a fixed count, not the machine's cores, keeps it the same everywhere.
SPM_THREADS = 8
_WORD = re.compile(r"[\w']+|[^\w\s]")


def tokenize(text: str, kind: str) -> list[str]:
  """Words (punctuation split off) or characters (spaces included)."""
  if kind == "word":
    return _WORD.findall(text)
  if kind == "char":
    return list(text)
  if kind == "sentencepiece":
    raise ValueError("sentencepiece tokenizes with a trained model: SentencePieceVocab")
  raise ValueError(f"unknown tokenizer {kind!r}; valid tokenizers: {', '.join(TOKENIZERS)}")


def detokenize(tokens: list[str], kind: str) -> str:
  if kind == "char":
    return "".join(tokens)
  text = " ".join(tokens)
  # Undo the split of punctuation: "forty - two" -> "forty-two", "one , two" -> "one, two".
  text = re.sub(r" ([,.;:!?])", r"\1", text)
  return re.sub(r" ?([-']) ?", r"\1", text)


def content_ids(ids) -> list[int]:
  """The ids before the first EOS, padding dropped."""
  out = []
  for i in np.asarray(ids).tolist():
    if i == EOS_ID:
      break
    if i != PAD_ID:
      out.append(i)
  return out


class Vocab:
  """Token <-> id, ids 0..3 the special tokens."""

  def __init__(self, tokens: list[str], kind: str):
    if kind not in ("word", "char"):
      raise ValueError(f"unknown tokenizer {kind!r}; valid tokenizers: {', '.join(TOKENIZERS)}")
    self.kind = kind
    self.itos = list(SPECIAL_TOKENS) + [t for t in tokens if t not in SPECIAL_TOKENS]
    self.stoi = {t: i for i, t in enumerate(self.itos)}

  @classmethod
  def build(cls, texts, kind: str, max_size: int = 0) -> "Vocab":
    """The tokens of `texts`, most frequent first; at most `max_size` (0: all)."""
    counts = Counter(t for text in texts for t in tokenize(text, kind))
    tokens = sorted(counts, key=lambda t: (-counts[t], t))
    return cls(tokens[:max_size - len(SPECIAL_TOKENS)] if max_size else tokens, kind)

  def __len__(self) -> int:
    return len(self.itos)

  def encode(self, text: str, eos: bool = False) -> list[int]:
    ids = [self.stoi.get(t, UNK_ID) for t in tokenize(text, self.kind)]
    return ids + [EOS_ID] if eos else ids

  def encode_batch(self, texts: list[str], eos: bool = False) -> list[list[int]]:
    return [self.encode(t, eos) for t in texts]

  def tokens(self, ids) -> list[str]:
    """Tokens up to the first EOS, padding dropped."""
    return [self.itos[i] for i in content_ids(ids)]

  def decode(self, ids) -> str:
    return detokenize(self.tokens(ids), self.kind)

  def to_json(self) -> dict:
    return {"kind": self.kind, "tokens": self.itos}

  @classmethod
  def from_json(cls, data: dict) -> "Vocab":
    return cls(data["tokens"][len(SPECIAL_TOKENS):], data["kind"])

  def save(self, path) -> None:
    _save_json(path, self.to_json())

  @classmethod
  def load(cls, path) -> "Vocab":
    return cls.from_json(files.read_json(path, keys=("kind", "tokens")))


class SentencePieceVocab:
  """A sentencepiece model (unigram or BPE) with our special-token ids.

  Trained on the training split with `<pad>`=0, `<sos>`=1, `<eos>`=2,
  `<unk>`=3, so ids mean the same as in `Vocab`.
  """
  kind = "sentencepiece"

  def __init__(self, model_proto: bytes):
    self.proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

  @classmethod
  def train(cls, texts, vocab_size: int, model_type: str = "unigram") -> "SentencePieceVocab":
    """Trained on `texts` (an iterable; `data.prepare` samples large corpora first),
    in `SPM_THREADS` threads."""
    if model_type not in ("unigram", "bpe"):
      raise ValueError(f"dataset.spm_model_type={model_type!r} is not valid; valid: unigram, bpe")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, pad_id=PAD_ID, bos_id=1, eos_id=EOS_ID, unk_id=UNK_ID,
        character_coverage=1.0, num_threads=SPM_THREADS, minloglevel=2,
        hard_vocab_limit=False)
    return cls(model.getvalue())

  def __len__(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str, eos: bool = False) -> list[int]:
    ids = self.sp.encode(text)
    return ids + [EOS_ID] if eos else ids

  def encode_batch(self, texts: list[str], eos: bool = False) -> list[list[int]]:
    ids = self.sp.encode(texts)
    return [x + [EOS_ID] for x in ids] if eos else ids

  def tokens(self, ids) -> list[str]:
    return [self.sp.id_to_piece(i) for i in content_ids(ids)]

  def decode(self, ids) -> str:
    return self.sp.decode(content_ids(ids))

  def to_json(self) -> dict:
    return {"kind": self.kind, "model": base64.b64encode(self.proto).decode()}

  def save(self, path) -> None:
    _save_json(path, self.to_json())


def _save_json(path, obj) -> None:
  files.write_atomically(path, json.dumps(obj, ensure_ascii=False))


def build_vocab(texts, kind: str, cfg):
  """A word / char `Vocab` or a sentencepiece model of `texts` (an iterable, read
  once), by the `config.dataset` fields `vocab_size` and `spm_model_type`."""
  size = cfg.vocab_size
  if kind != "sentencepiece":
    return Vocab.build(texts, kind, size)
  if size < 8:
    raise ValueError(f"dataset.vocab_size must be >= 8 for sentencepiece, got {size}")
  return SentencePieceVocab.train(texts, size, cfg.spm_model_type)


def load_vocab(path):
  """A `Vocab` or `SentencePieceVocab` saved with `.save(path)`."""
  data = files.read_json(path, keys=("kind",))
  key = "model" if data["kind"] == SentencePieceVocab.kind else "tokens"
  if key not in data:
    raise files.wrong_shape(path, ("kind", key))
  if data["kind"] == SentencePieceVocab.kind:
    return SentencePieceVocab(base64.b64decode(data["model"]))
  return Vocab.from_json(data)
