"""`python -m seq2seq_jax.data prepare NAME` and `python -m seq2seq_jax.data stats NAME`."""

import argparse
import logging
from pathlib import Path

import numpy as np

from seq2seq_jax import cli, config_schema, data
from seq2seq_jax.data import debian, tsv
from seq2seq_jax.tokens import UNK_ID


def main(argv=None) -> None:
  cli.interrupt_on_sigterm()
  try:
    _main(argv)
  except KeyboardInterrupt as e:  # a corpus being prepared is renamed into place when whole
    cli.fail_interrupted(e, "before it finished (nothing half-written): the same command "
                         "starts it again")
  except (OSError, ValueError, RuntimeError) as e:  # a missing corpus, apt-get, tfds offline
    cli.fail(e, 1)


def _main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m seq2seq_jax.data")
  parser.add_argument("command", choices=("prepare", "stats"))
  parser.add_argument("name", help="dataset name, e.g. debian:de-en, tsv:PATH, num2words_en_de")
  parser.add_argument("--tokenizer", default=config_schema.Dataset.tokenizer,
                      choices=("", "word", "char", "sentencepiece"),
                      help="stats: the tokenizer training would use (dataset.tokenizer; "
                      "default: the dataset's own)")
  parser.add_argument("--vocab_size", type=int, default=config_schema.Dataset.vocab_size,
                      help="stats: dataset.vocab_size (word: the N most frequent, 0 = all; "
                      "sentencepiece: the model's size, needed)")
  parser.add_argument("--spm_model_type", default=config_schema.Dataset.spm_model_type,
                      choices=("unigram", "bpe"),
                      help="stats: dataset.spm_model_type")
  parser.add_argument("--verbose", action="store_true",
                      help=f"print the traceback above an error line (also: {cli.VERBOSE_ENV}=1)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  if not data.is_dataset_name(args.name):
    cli.fail(f"unknown dataset {args.name!r}; valid: {', '.join(data.dataset_names())}", 1)
  if args.command == "prepare":
    if args.name.startswith("debian:"):
      path = debian.prepare(args.name[len("debian:"):])
      print(f"{args.name}: {sum(1 for _ in open(path, encoding='utf-8'))} unique pairs in {path}")
    else:
      print(f"{args.name} needs no preparation")
    return
  cfg = config_schema.Dataset(name=args.name, tokenizer=args.tokenizer,
                              vocab_size=args.vocab_size, spm_model_type=args.spm_model_type,
                              max_src_len=0, max_tgt_len=0)  # the whole corpus
  dataset = data.load(cfg)  # the vocabularies training would build from these flags
  origin = _origins(args.name)
  for split in data.SPLITS:
    pairs = dataset.texts[split]
    counts = {}
    for pair in pairs:
      counts[origin.get(pair, "-")] = counts.get(origin.get(pair, "-"), 0) + 1
    by_source = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if origin else ""
    print(f"{split}: {len(pairs)} pairs" + (f" ({by_source})" if by_source else ""))
    for side, vocab, idx in (("source", dataset.src_vocab, 0), ("target", dataset.tgt_vocab, 1)):
      print(f"  {side}: {token_stats([vocab.encode(p[idx]) for p in pairs], vocab)}")
  for src, tgt in dataset.texts["train"][:3]:
    print(f"  example: {src}  |||  {tgt}")


def token_stats(encoded: list[list[int]], vocab) -> str:
  """Lengths in the vocabulary's tokens, distinct tokens and the `<unk>` rate."""
  lengths = np.array([len(ids) for ids in encoded])
  q = np.percentile(lengths, [50, 90, 99, 100]).astype(int)
  ids = np.concatenate([np.asarray(x, np.int64) for x in encoded] or [np.zeros(0, np.int64)])
  unk = float(np.mean(ids == UNK_ID)) if ids.size else 0.0
  return (f"{len(vocab)}-token {vocab.kind} vocabulary: length p50 {q[0]} p90 {q[1]} p99 "
          f"{q[2]} max {q[3]}; {len(np.unique(ids))} distinct tokens; <unk> {100 * unk:.2f}% "
          "of tokens")


def _origins(name: str) -> dict:
  """(source, target) -> the third TSV column (where the pair comes from), if any."""
  path = data.corpus_path(name)
  if path is None:
    return {}
  out = {}
  with tsv.open_corpus(Path(path)) as f:  # bytes, decompressed as the corpus reader does
    for raw in f:
      cols = raw.decode("utf-8", errors="replace").rstrip("\r\n").split("\t")
      if len(cols) >= 3:
        out[(cols[0].strip(), cols[1].strip())] = cols[2]
  return out


if __name__ == "__main__":
  main()
