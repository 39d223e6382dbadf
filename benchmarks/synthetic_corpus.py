"""Large synthetic parallel corpora, to measure data loading and tokenizer training at scale.

    python benchmarks/synthetic_corpus.py PATH NUM_PAIRS [--seed S]

writes NUM_PAIRS lines `source<TAB>target\\n` (the TSV the data pipeline reads), e.g. 50k, 200k,
800k or 3.2M pairs, without holding more than one chunk in memory. Real corpora of those sizes
are slow to fetch and awkward to ship with tests; this one is made in seconds, is byte-identical
for the same arguments, and has the properties that matter for loading and subword training:

* two vocabularies of 50,000 made-up words (lowercase letters, 2-12 characters, distinct), one a
  side, made from the seed; the most frequent ranks get the shortest words, as in real text;
* sentences of 5-40 words (uniform), words drawn Zipf-distributed (P(rank r) ~ 1 / r^1.1);
* a learnable translation: source word i becomes target word i, and then, at every even position
  j (0, 2, 4, ...) of the sentence that has a successor, the target words j and j + 1 swap places
  when the source word at j has an odd index (local reordering that depends on the content).

Pairs come in chunks of `CHUNK` sentences, each drawn from its own random stream (seed, chunk
number), so the corpus for fewer pairs is a prefix of the corpus for more: the first 800k lines
of the 3.2M corpus are the 800k corpus, and lines past NUM_PAIRS of a larger corpus with the same
seed make a held-out set of the same distribution. Lines are assembled as bytes with numpy (a
padded table of the words, gathered and compressed), not with Python string joins per word.
"""

import argparse
import time

import numpy as np

VOCAB_SIZE = 50_000
MIN_WORD, MAX_WORD = 2, 12
MIN_LEN, MAX_LEN = 5, 40
ZIPF_EXPONENT = 1.1
CHUNK = 50_000  # sentences a chunk; fixed, so that corpora with the same seed are prefixes

_WIDTH = MAX_WORD + 1  # a word and the separator that follows it


def make_vocabulary(rng, size=VOCAB_SIZE):
  """`size` distinct lowercase words of 2-12 letters, shortest first (stable order)."""
  words = {}
  while len(words) < size:
    n = 2 * (size - len(words))
    lengths = rng.integers(MIN_WORD, MAX_WORD + 1, size=n)
    letters = rng.integers(ord("a"), ord("z") + 1, size=(n, MAX_WORD), dtype=np.uint8)
    for row, length in zip(letters, lengths):
      word = row[:length].tobytes()
      if word not in words:
        words[word] = None
        if len(words) == size:
          break
  return sorted(words, key=len)


def _word_table(words):
  """(V, _WIDTH) uint8 table: each word followed by a space, padded; and the word lengths."""
  table = np.zeros((len(words), _WIDTH), np.uint8)
  lengths = np.empty(len(words), np.int64)
  for i, word in enumerate(words):
    table[i, : len(word)] = np.frombuffer(word, np.uint8)
    table[i, len(word)] = ord(" ")
    lengths[i] = len(word)
  return table, lengths


def _zipf_cdf(size=VOCAB_SIZE, exponent=ZIPF_EXPONENT):
  p = 1.0 / np.arange(1, size + 1, dtype=np.float64) ** exponent
  cdf = np.cumsum(p)
  return cdf / cdf[-1]


def _chunk_bytes(rng, num, cdf, table, lengths):
  """`num` lines `source<TAB>target\\n` as one bytes object."""
  vocab = len(lengths) // 2  # the table holds the source words, then the target words
  # Draws for a whole chunk, whatever `num`, so that a shorter corpus is a prefix of a longer one.
  sent_len = rng.integers(MIN_LEN, MAX_LEN + 1, size=CHUNK)
  uniform = rng.random(int(sent_len.sum()))
  sent_len = sent_len[:num]
  total = int(sent_len.sum())
  src = np.minimum(np.searchsorted(cdf, uniform[:total], side="right"), vocab - 1)
  starts = np.cumsum(sent_len) - sent_len
  sent = np.repeat(np.arange(num), sent_len)
  pos = np.arange(total) - starts[sent]

  # Target: word-for-word, then swap (j, j + 1) for even j with an odd source word at j.
  swap = (pos % 2 == 0) & (pos + 1 < sent_len[sent]) & (src % 2 == 1)
  order = np.arange(total)
  j = np.flatnonzero(swap)
  order[j], order[j + 1] = j + 1, j
  tgt = src[order] + vocab

  # Each sentence's tokens in line order: its source words, then its target words.
  tokens = np.empty(2 * total, np.int64)
  line_start = 2 * starts[sent]
  tokens[line_start + pos] = src
  tokens[line_start + sent_len[sent] + pos] = tgt
  rows = table[tokens]  # (2 * total, _WIDTH)
  tok_len = lengths[tokens]
  line_ends = 2 * np.cumsum(sent_len)
  last_src = line_ends - sent_len - 1
  last_tgt = line_ends - 1
  rows[last_src, tok_len[last_src]] = ord("\t")
  rows[last_tgt, tok_len[last_tgt]] = ord("\n")
  keep = np.arange(_WIDTH) <= tok_len[:, None]
  return rows[keep].tobytes()


def write_corpus(path, num_pairs, seed=0):
  """Writes `num_pairs` synthetic pairs to `path` (deterministic in `num_pairs` and `seed`)."""
  if num_pairs < 0:
    raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
  vocab_rng = np.random.default_rng([seed, 0])
  source_words = make_vocabulary(vocab_rng)
  target_words = make_vocabulary(vocab_rng)
  table, lengths = _word_table(source_words + target_words)
  cdf = _zipf_cdf()
  with open(path, "wb") as f:
    for chunk, first in enumerate(range(0, num_pairs, CHUNK)):
      rng = np.random.default_rng([seed, 1, chunk])
      f.write(_chunk_bytes(rng, min(CHUNK, num_pairs - first), cdf, table, lengths))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("path")
  parser.add_argument("num_pairs", type=int)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  t0 = time.perf_counter()
  write_corpus(args.path, args.num_pairs, seed=args.seed)
  print(f"{args.num_pairs} pairs -> {args.path} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
  main()
