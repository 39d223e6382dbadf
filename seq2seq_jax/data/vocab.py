"""Word- and character-level vocabularies; the special tokens live in `tokens`."""

from collections import Counter
import json
import re

import numpy as np

from seq2seq_jax.tokens import EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID

TOKENIZERS = ("word", "char")
_WORD = re.compile(r"[\w']+|[^\w\s]")


def tokenize(text: str, kind: str) -> list[str]:
  """Words (punctuation split off) or characters (spaces included)."""
  if kind == "word":
    return _WORD.findall(text)
  if kind == "char":
    return list(text)
  raise ValueError(f"unknown tokenizer {kind!r}; valid tokenizers: {', '.join(TOKENIZERS)}")


def detokenize(tokens: list[str], kind: str) -> str:
  if kind == "char":
    return "".join(tokens)
  text = " ".join(tokens)
  # Undo the split of punctuation: "forty - two" -> "forty-two", "one , two" -> "one, two".
  text = re.sub(r" ([,.;:!?])", r"\1", text)
  return re.sub(r" ?([-']) ?", r"\1", text)


class Vocab:
  """Token <-> id, ids 0..3 the special tokens."""

  def __init__(self, tokens: list[str], kind: str):
    tokenize("", kind)  # validates kind
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

  def tokens(self, ids) -> list[str]:
    """Tokens up to the first EOS, padding dropped."""
    out = []
    for i in np.asarray(ids).tolist():
      if i == EOS_ID:
        break
      if i != PAD_ID:
        out.append(self.itos[i])
    return out

  def decode(self, ids) -> str:
    return detokenize(self.tokens(ids), self.kind)

  def to_json(self) -> dict:
    return {"kind": self.kind, "tokens": self.itos}

  @classmethod
  def from_json(cls, data: dict) -> "Vocab":
    return cls(data["tokens"][len(SPECIAL_TOKENS):], data["kind"])

  def save(self, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.to_json(), f, ensure_ascii=False)

  @classmethod
  def load(cls, path) -> "Vocab":
    with open(path, encoding="utf-8") as f:
      return cls.from_json(json.load(f))
