"""Where a dataset's text comes from, by `dataset.name`, and what makes it that text
(`identity`: the key of its prepared data)."""

import hashlib
from importlib import metadata
from pathlib import Path
import re

from seq2seq_jax.data import debian, synthetic, tfds_source, tsv

# The datasets that are one TSV file, and so can take their own dev and test files.
WITH_SPLIT_FILES = ("tsv:", "debian:")

# The fields a generated task's text depends on (the tokenizer's are not among them).
GENERATOR_FIELDS = ("max_number", "number_split", "train_size", "dev_size", "test_size", "seed",
                    "num_symbols", "min_length", "max_length", "max_digits")


def dataset_names() -> tuple[str, ...]:
  return (*synthetic.TASKS, *(f"debian:{p}" for p in debian.CORPORA), "tsv:PATH",
          "tfds:NAME[/CONFIG]")


def is_dataset_name(name: str) -> bool:
  return name in synthetic.TASKS or name.startswith(("tsv:", "tfds:")) or (
      name.startswith("debian:") and name[len("debian:"):] in debian.CORPORA)


def corpus_path(name: str):
  """The TSV file behind `debian:PAIR` (prepared on first use) or `tsv:PATH`; else None."""
  if name.startswith("debian:"):
    return debian.prepare(name[len("debian:"):])
  if name.startswith("tsv:"):
    return name[len("tsv:"):]
  return None


def corpus_file(cfg):
  """The TSV file of `cfg.name`, or None for a generated or tfds dataset."""
  if cfg.name in synthetic.TASKS or cfg.name.startswith("tfds:"):
    return None
  path = corpus_path(cfg.name)
  if path is None:
    raise ValueError(f"unknown dataset.name {cfg.name!r}; valid datasets: "
                     f"{', '.join(dataset_names())}")
  return Path(path)


def _code_digest(*modules) -> str:
  digest = hashlib.sha256()
  for module in modules:
    digest.update(Path(module.__file__).read_bytes())
  return digest.hexdigest()[:16]


def identity(cfg) -> tuple[dict, str, str]:
  """What the text of `cfg.name` is made of (a TSV's bytes, a generator's fields and
  code), and the tokenizer of each side that the dataset brings."""
  given = split_files(cfg)  # refused for a dataset that brings its splits
  if cfg.name in synthetic.TASKS:
    _, src_kind, tgt_kind = synthetic.TASKS[cfg.name]
    return ({"generated": cfg.name, "fields": {f: getattr(cfg, f) for f in GENERATOR_FIELDS},
             "code": _code_digest(synthetic, tsv), "num2words": metadata.version("num2words")},
            src_kind, tgt_kind)
  if cfg.name.startswith("tfds:"):
    return ({"tfds": cfg.name, "data_dir": str(Path(cfg.data_dir).expanduser())}, "word",
            "word")
  path = tsv.check_corpus(corpus_file(cfg))
  found = {"tsv_sha256": tsv.file_digest(path), "dev_size": cfg.dev_size,
           "test_size": cfg.test_size}
  for split, path in given.items():  # absent without them: the keys made before
    found[f"{split}_sha256"] = tsv.file_digest(path)
  return found, "word", "word"


def split_files(cfg) -> dict:
  """`{split: Path}` of the dev and test files a config gives (`dataset.dev_path`,
  `test_path`), checked: only a TSV corpus takes them (`config_checks` asks first).
  `dev_path` may list several files, comma-separated: the first is `dev` (best/ and
  early stopping), each other one the split `dev-NAME`, NAME its file name up to the
  first dot (`dev-newstest2014`), evaluated beside it."""
  paths = {"dev": [p.strip() for p in cfg.dev_path.split(",") if p.strip()],
           "test": [cfg.test_path] if cfg.test_path else []}
  if (paths["dev"] or paths["test"]) and not cfg.name.startswith(WITH_SPLIT_FILES):
    raise ValueError(f"dataset.{'dev' if paths['dev'] else 'test'}_path needs a TSV corpus "
                     f"(dataset.name=tsv:PATH or debian:PAIR), not {cfg.name!r}, whose splits "
                     "are given")
  given = {}
  for side, listed in paths.items():
    for i, path in enumerate(listed):
      split = side if i == 0 else "dev-" + re.sub(r"[^\w-]", "_", Path(path).name.split(".")[0])
      if split in given:
        raise ValueError(f"dataset.dev_path: two dev files named {split[4:]!r} ({path}): "
                         "give each extra dev set a file name of its own")
      given[split] = tsv.check_corpus(Path(path).expanduser(), f"dataset.{side}_path=")
  return given


def load_split_texts(cfg) -> dict:
  """Text pairs by split of a generated or tfds dataset (a TSV is streamed)."""
  if cfg.name in synthetic.TASKS:
    loader, _, _ = synthetic.TASKS[cfg.name]
    return loader(cfg)
  return tfds_source.load_pairs(cfg.name[len("tfds:"):], cfg.data_dir, cfg.download)
