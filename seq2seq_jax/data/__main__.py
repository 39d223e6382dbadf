"""`python -m seq2seq_jax.data prepare NAME` and `python -m seq2seq_jax.data stats NAME`
(or `--config=FILE` for the dataset fields of a config)."""

import argparse
import logging
from pathlib import Path
import time

import numpy as np

from seq2seq_jax import cli, config_schema, config_utils, data
from seq2seq_jax.data import prepare as preparing
from seq2seq_jax.data import tsv
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


FIELDS = {  # flag -> (type, help); unset flags keep the config's (or the default) value
    "tokenizer": (str, "dataset.tokenizer: '' (the dataset's own) | word | char | "
                  "sentencepiece"),
    "vocab_size": (int, "dataset.vocab_size (word: the N most frequent, 0 = all; "
                   "sentencepiece: the model's size, needed)"),
    "spm_model_type": (str, "dataset.spm_model_type: unigram | bpe"),
    "spm_input_sentence_size": (int, "dataset.spm_input_sentence_size (0 = every sentence)"),
    "joint_vocab": (lambda v: v.lower() in ("1", "true", "yes"), "dataset.joint_vocab"),
    "max_src_len": (int, "dataset.max_src_len, for the share of pairs over it (0 = none)"),
    "max_tgt_len": (int, "dataset.max_tgt_len"),
    "dev_size": (int, "dataset.dev_size"),
    "test_size": (int, "dataset.test_size"),
    "dev_path": (str, "dataset.dev_path: the corpus's own dev file (TSV)"),
    "test_path": (str, "dataset.test_path: its own test file (TSV)"),
}


def _main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m seq2seq_jax.data",
      description="prepare: tokenize a dataset once into memory-mapped token arrays in "
      "$SEQ2SEQ_JAX_CACHE/prepared (training does it when they are missing); stats: its "
      "splits, lengths, tokens a word and the pairs over the length limits.")
  parser.add_argument("command", choices=("prepare", "stats"))
  parser.add_argument("name", nargs="?", help="dataset name, e.g. debian:de-en, tsv:PATH, "
                      "num2words_en_de (default: the --config's dataset.name)")
  parser.add_argument("--config", help="FILE[:ARG]: take the dataset fields of this config "
                      "(e.g. configs/deen_attention.py); the flags below override them")
  for flag, (kind, text) in FIELDS.items():
    parser.add_argument(f"--{flag}", type=kind, default=None, help=text)
  parser.add_argument("--workers", type=int, default=None,
                      help="prepare: encoding processes (default: every core)")
  parser.add_argument("--shard_pairs", type=int, default=preparing.SHARD_PAIRS,
                      help=argparse.SUPPRESS)  # tests: small shards
  parser.add_argument("--verbose", action="store_true",
                      help=f"print the traceback above an error line (also: {cli.VERBOSE_ENV}=1)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  cfg = _dataset_config(args)
  if not data.is_dataset_name(cfg.name):
    cli.fail(f"unknown dataset {cfg.name!r}; valid: {', '.join(data.dataset_names())}", 1)
  t0 = time.time()
  prepared = preparing.prepare(cfg, workers=args.workers, shard_pairs=args.shard_pairs)
  print(f"{cfg.name}: prepared in {prepared.tokens} "
        f"({'found made' if prepared.reused else f'made in {time.time() - t0:.1f} s'})")
  print(f"  vocabularies: {len(prepared.src_vocab)} source ({prepared.src_vocab.kind}), "
        f"{len(prepared.tgt_vocab)} target ({prepared.tgt_vocab.kind}) tokens")
  origin = _origins(cfg.name) if args.command == "stats" else {}
  for split in preparing.splits_of(prepared.texts):
    print(_split_line(prepared, split, cfg, origin))
  if args.command == "stats":
    for src, tgt in preparing.Texts(prepared.texts, preparing.read_rows(prepared, "train"))[:3]:
      print(f"  example: {src}  |||  {tgt}")


def _dataset_config(args) -> config_schema.Dataset:
  """The dataset section: the config file's (or the defaults), then the flags."""
  fields = {}
  if args.config:
    path, _, arg = args.config.partition(":")
    module = config_utils.load_module(path)
    fields = config_schema.as_dict(config_schema.build(module.get_config(arg or None)).dataset)
  fields.update({k: getattr(args, k) for k in FIELDS if getattr(args, k) is not None})
  if args.name:
    fields["name"] = args.name
  elif not args.config:
    cli.fail("give a dataset NAME or --config=FILE", 1)
  fields["bucket_boundaries"] = tuple(fields.get("bucket_boundaries", ()))
  return config_schema.Dataset(**fields)


def _split_line(prepared, split: str, cfg, origin: dict) -> str:
  """Pairs (by origin), lengths, tokens a word and the pairs over the length limits."""
  stats = prepared.stats[split]
  head = f"{split}: {stats['pairs']} pairs"
  if origin:
    counts = {}
    for pair in preparing.Texts(prepared.texts, preparing.read_rows(prepared, split)):
      counts[origin.get(pair, "-")] = counts.get(origin.get(pair, "-"), 0) + 1
    head += " (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"
  lines = [head]
  over = np.zeros(stats["pairs"], bool)
  for side, vocab, limit in (("src", prepared.src_vocab, cfg.max_src_len),
                             ("tgt", prepared.tgt_vocab, cfg.max_tgt_len)):
    tokens = preparing.read_tokens(prepared, split, side)
    if limit:
      over |= tokens.lengths > limit
    lines.append(f"  {'source' if side == 'src' else 'target'}: {token_stats(tokens, vocab)}")
  src_words, tgt_words = preparing.pieces_per_word(stats)
  lines.append(f"  tokens a word: source {src_words:.2f}, target {tgt_words:.2f}")
  if cfg.max_src_len or cfg.max_tgt_len:
    lines.append(f"  over dataset.max_src_len={cfg.max_src_len} / max_tgt_len="
                 f"{cfg.max_tgt_len}: {int(over.sum())} pairs ({100 * over.mean():.2f}%)" +
                 (" dropped from training" if split == "train" else " cut for evaluation"))
  return "\n".join(lines)


def token_stats(tokens, vocab) -> str:
  """Lengths in the vocabulary's tokens, distinct tokens and the `<unk>` rate."""
  q = np.percentile(tokens.lengths, [50, 90, 99, 100]).astype(int)
  counts = np.bincount(np.asarray(tokens.tokens), minlength=len(vocab))
  unk = counts[UNK_ID] / max(counts.sum(), 1)
  return (f"{len(vocab)}-token {vocab.kind} vocabulary: length p50 {q[0]} p90 {q[1]} p99 "
          f"{q[2]} max {q[3]}; {int(np.count_nonzero(counts))} distinct tokens; <unk> "
          f"{100 * unk:.2f}% of tokens")


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
