"""Generated tasks that need no download.

* ``num2words_en_de``: English number words to German ones, generated with
  `num2words` ("three hundred and forty-two" -> "dreihundertzweiundvierzig").
  German writes the units before the tens, so the attention map must reorder.
  `dataset.number_split`: ``by_length`` (the default) holds out dev and test
  sentences stratified by source length (as many of each length as it has, up to
  an equal share), and trains on every other number plus the smallest ones (below
  1,000, or the lowest 1% of a smaller range) repeated until they are a quarter
  of the training pairs, and each rarer source length repeated to 2% of them
  ("eighty thousand": 2 words): uniform numbers up to 99,999 are 88% seven-word ones,
  and a model trained on them alone spells "seven" as "siebenundsieben".
  ``hash`` (the data of runs before it) is every number once, split by a hash.
* ``copy``, ``reverse``, ``sort``: sequences of letters, word-level.
* ``addition``: ``"123+45" -> "168"``, character-level.
"""

from num2words import num2words
import numpy as np

from seq2seq_jax.data import tsv, vocab

LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


NUMBER_SPLITS = ("by_length", "hash")
MIN_LENGTH_SHARE = 0.02  # of the training pairs, for every source length


def num2words_en_de(cfg):
  if cfg.max_number < 10:
    raise ValueError(f"dataset.max_number must be >= 10, got {cfg.max_number}")
  pairs = [(num2words(n, lang="en"), num2words(n, lang="de")) for n in range(cfg.max_number + 1)]
  how = cfg.number_split
  if how == "hash":
    return tsv.split_by_hash(pairs, cfg.dev_size, cfg.test_size)
  if how != "by_length":
    raise ValueError(f"dataset.number_split={how!r} is not valid; valid: "
                     f"{', '.join(NUMBER_SPLITS)}")
  return split_by_length(pairs, cfg.dev_size, cfg.test_size, cfg.seed,
                         small=min(1000, (cfg.max_number + 1) // 100))


def _shares(counts: dict, total: int) -> dict:
  """`total` spread over the keys of `counts` as equally as they allow (each at
  most its count): the smallest first, what they cannot take to the others."""
  shares, left = {}, total
  for i, key in enumerate(sorted(counts, key=lambda k: (counts[k], k))):
    shares[key] = min(counts[key], left // (len(counts) - i))
    left -= shares[key]
  return shares


def split_by_length(pairs, dev_size: int, test_size: int, seed: int, small: int) -> dict:
  """Dev and test stratified by the source's word count (disjoint, drawn with
  `seed`, each length split between them in proportion to their sizes; at most
  half of a length's numbers from `small` on);
  training: every pair not held out, plus the first `small` pairs (numbers
  0 .. small-1, held out or not) repeated to a quarter of it, and the pairs of
  each source length that has fewer repeated up to `MIN_LENGTH_SHARE` of that."""
  by_length: dict[int, list[int]] = {}
  for i, (src, _) in enumerate(pairs):
    by_length.setdefault(len(vocab.tokenize(src, "word")), []).append(i)
  total = dev_size + test_size
  # A length keeps at least half of its numbers from `small` on for training.
  can_give = {length: sum(i < small for i in ids) + sum(i >= small for i in ids) // 2
              for length, ids in by_length.items()}
  if total > sum(can_give.values()):
    raise ValueError(f"dataset.dev_size + dataset.test_size = {total} leaves no training pairs "
                     f"of some lengths: at most {sum(can_give.values())} of the {len(pairs)} "
                     "numbers are held out (half of each source length's stay in training)")
  rng = np.random.default_rng([seed, 7])
  shares = _shares(can_give, total)
  dev, test = [], []
  for length in sorted(by_length):
    ids = by_length[length]
    order = [int(i) for i in rng.permutation(len(ids))]
    small_first = [ids[j] for j in order if ids[j] < small] + [ids[j] for j in order
                                                                if ids[j] >= small]
    picked = small_first[:shares[length]]
    cut = round(len(picked) * dev_size / total)
    dev += picked[:cut]
    test += picked[cut:]
  while len(dev) > dev_size:  # rounding: the last (the longest) length evens it out
    test.append(dev.pop())
  while len(dev) < dev_size:
    dev.append(test.pop())
  held = set(dev) | set(test)
  rest = [i for i in range(small, len(pairs)) if i not in held]
  repeats = max(1, -(-len(rest) // (3 * small))) if small else 0
  train = rest + list(range(small)) * repeats
  # Rare lengths ("eighty thousand": 2 words) repeated up to MIN_LENGTH_SHARE of it.
  length_of = {i: length for length, ids in by_length.items() for i in ids}
  count = {length: 0 for length in by_length}
  for i in train:
    count[length_of[i]] += 1
  extra = []
  for length in sorted(by_length):
    own = [i for i in train if length_of[i] == length] if count[length] else []
    need = int(MIN_LENGTH_SHARE * len(train)) - count[length]
    if own and need > 0:
      extra += (own * -(-need // len(own)))[:need]
  return {"train": [pairs[i] for i in train + extra],
          "dev": [pairs[i] for i in sorted(dev)], "test": [pairs[i] for i in sorted(test)]}


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
