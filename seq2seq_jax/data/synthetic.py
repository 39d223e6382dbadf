"""Generated tasks that need no download.

* ``num2words_en_de``: English number words to German ones, generated with
  `num2words` ("three hundred and forty-two" -> "dreihundertzweiundvierzig").
  German writes the units before the tens, so the attention map must reorder.
  Every number in ``[0, max_number]`` once, split by a hash of the source.
* ``copy``, ``reverse``, ``sort``: sequences of letters, word-level.
* ``addition``: ``"123+45" -> "168"``, character-level.
"""

from num2words import num2words
import numpy as np

from seq2seq_jax.data import tsv

LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def num2words_en_de(cfg):
  if cfg.max_number < 10:
    raise ValueError(f"dataset.max_number must be >= 10, got {cfg.max_number}")
  pairs = [(num2words(n, lang="en"), num2words(n, lang="de")) for n in range(cfg.max_number + 1)]
  return tsv.split_by_hash(pairs, cfg.dev_size, cfg.test_size)


def _sequences(cfg, split, transform):
  sizes = {"train": cfg.train_size, "dev": cfg.dev_size, "test": cfg.test_size}
  rng = np.random.default_rng([cfg.seed, ("train", "dev", "test").index(split)])
  vocab = LETTERS[:cfg.num_symbols]
  pairs = []
  for _ in range(sizes[split]):
    n = int(rng.integers(cfg.min_length, cfg.max_length + 1))
    seq = [vocab[i] for i in rng.integers(0, len(vocab), n)]
    pairs.append((" ".join(seq), " ".join(transform(seq))))
  return pairs


def _sequence_task(transform):
  def load(cfg):
    return {split: _sequences(cfg, split, transform) for split in ("train", "dev", "test")}
  return load


def addition(cfg):
  out = {}
  for index, split in enumerate(("train", "dev", "test")):
    rng = np.random.default_rng([cfg.seed, index])
    size = {"train": cfg.train_size, "dev": cfg.dev_size, "test": cfg.test_size}[split]
    high = 10 ** cfg.max_digits
    a, b = rng.integers(0, high, size), rng.integers(0, high, size)
    out[split] = [(f"{x}+{y}", str(x + y)) for x, y in zip(a.tolist(), b.tolist())]
  return out


# name: (loader, source tokenizer, target tokenizer)
TASKS = {
    "num2words_en_de": (num2words_en_de, "word", "char"),
    "copy": (_sequence_task(lambda s: s), "word", "word"),
    "reverse": (_sequence_task(lambda s: s[::-1]), "word", "word"),
    "sort": (_sequence_task(sorted), "word", "word"),
    "addition": (addition, "char", "char"),
}
