"""`python -m seq2seq_jax.data prepare NAME` and `python -m seq2seq_jax.data stats NAME`."""

import argparse
import logging

import ml_collections
import numpy as np

from seq2seq_jax import cli, data
from seq2seq_jax.data import debian
from seq2seq_jax.data.vocab import tokenize


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
  cfg = ml_collections.ConfigDict(dict(name=args.name, dev_size=1000, test_size=1000,
                                      max_number=99_999, train_size=20_000, seed=0,
                                      num_symbols=10, min_length=3, max_length=10, max_digits=3))
  texts, src_kind, tgt_kind = data.load_texts(cfg)
  origin = _origins(args.name)
  for split in data.SPLITS:
    pairs = texts[split]
    counts = {}
    for pair in pairs:
      counts[origin.get(pair, "-")] = counts.get(origin.get(pair, "-"), 0) + 1
    by_source = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if origin else ""
    print(f"{split}: {len(pairs)} pairs" + (f" ({by_source})" if by_source else ""))
    for side, kind, idx in (("source", src_kind, 0), ("target", tgt_kind, 1)):
      lengths = np.array([len(tokenize(p[idx], kind)) for p in pairs])
      q = np.percentile(lengths, [50, 90, 99, 100]).astype(int)
      vocab = len({t for p in pairs for t in tokenize(p[idx], kind)})
      print(f"  {side} ({kind}): length p50 {q[0]} p90 {q[1]} p99 {q[2]} max {q[3]}; "
            f"{vocab} distinct tokens")
  for src, tgt in texts["train"][:3]:
    print(f"  example: {src}  |||  {tgt}")


def _origins(name: str) -> dict:
  """(source, target) -> the third TSV column (where the pair comes from), if any."""
  path = data.corpus_path(name)
  if path is None:
    return {}
  out = {}
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      cols = line.rstrip("\n").split("\t")
      if len(cols) >= 3:
        out[(cols[0].strip(), cols[1].strip())] = cols[2]
  return out


if __name__ == "__main__":
  main()
