"""Data prepared once (issue 28): the same pairs, arrays and batches as the code that
read every corpus into memory, files made whole across a kill, no tokenization at a
second start, and the dropped-pairs error."""

import json
import mmap
import os
from pathlib import Path
import pickle
import signal
import subprocess
import sys
import time

from conftest import code_env
import numpy as np
import pytest

from seq2seq_jax import config_schema, data
from seq2seq_jax.data import prepare as preparing
from seq2seq_jax.tokens import EOS_ID

ROOT = Path(__file__).resolve().parent.parent

# Loads each dataset with the code on PYTHONPATH; pickles texts, arrays, vocabularies
# and a TrainBatches epoch (and a bit) of batch 8, seed 3, the spec's buckets.
LOAD_SCRIPT = """
import json, pickle, sys
import numpy as np
from seq2seq_jax import config_schema, data
out = []
for spec in json.loads(sys.argv[1]):
  spec = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
  cfg = config_schema.Dataset(**spec)
  ds = data.load(cfg)
  batches = data.TrainBatches(*ds.arrays["train"], 8, 3, cfg.bucket_boundaries)
  out.append({"texts": {s: [tuple(p) for p in ds.texts[s]] for s in data.SPLITS},
              "arrays": {s: [np.asarray(x) for x in ds.arrays[s]] for s in data.SPLITS},
              "vocab": [ds.src_vocab.kind, ds.tgt_vocab.kind, len(ds.src_vocab)],
              "batches": [batches(i) for i in range(batches.per_epoch + 3)]})
sys.stdout.buffer.write(pickle.dumps(out))
"""


def debian_like_corpus(path: Path, pairs: int = 3000, seed: int = 0) -> Path:
  """Sentences of a small vocabulary with punctuation and apostrophes, sources that
  repeat with other targets, bad lines, and a few pairs over the length limits."""
  rng = np.random.default_rng(seed)
  words = np.array(["Das", "ist", "ein", "Haus", "don't", "x-y", "a,b", "Mein", "Freund",
                    "hat", "mich", "versetzt", "stood", "me", "up", "my", "friend", "!", "?"])
  lines = []
  for i in range(pairs):
    src = " ".join(rng.choice(words, rng.integers(1, 14))) + "."
    tgt = " ".join(rng.choice(words, rng.integers(1, 16))) + "."
    lines.append(f"{src}\t{tgt}\n")
    if i % 7 == 0:
      lines.append(f"{src}\t{tgt} auch\n")  # the same source, another target
    if i % 500 == 0:
      lines.append("a line without a tab\n")
  path.write_text("".join(lines), encoding="utf-8")
  return path


def specs(corpus: Path) -> list[dict]:
  common = {"name": f"tsv:{corpus}", "dev_size": 100, "test_size": 100}
  return [
      {**common, "max_src_len": 12, "max_tgt_len": 14, "bucket_boundaries": [4, 8]},
      {**common, "tokenizer": "char", "joint_vocab": True},
      {**common, "tokenizer": "sentencepiece", "vocab_size": 40},
      {"name": "num2words_en_de", "max_number": 999, "number_split": "hash", "dev_size": 50,
       "test_size": 50},
      {"name": "num2words_en_de", "max_number": 2000, "dev_size": 100, "test_size": 100},
      {"name": "reverse", "train_size": 300, "dev_size": 20, "test_size": 20},
  ]


def load_with(tree: Path, cache: Path, given: list[dict]) -> list[dict]:
  env = {**code_env(tree), "SEQ2SEQ_JAX_CACHE": str(cache)}
  proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, json.dumps(given)], cwd=tree,
                        env=env, capture_output=True, timeout=600)
  assert proc.returncode == 0, proc.stderr.decode()[-3000:]
  return pickle.loads(proc.stdout)


def test_prepared_data_is_the_in_memory_loaders_pairs_arrays_and_batches(
    in_memory_data_code, tmp_path):
  """Against the code before (`conftest.IN_MEMORY_DATA_COMMIT`), run beside it: the
  hash split of a TSV with repeated sources and bad lines, the long pairs dropped,
  dev and test cut, every tokenizer, and TrainBatches with and without buckets."""
  corpus = debian_like_corpus(tmp_path / "corpus.tsv")
  given = specs(corpus)
  before = load_with(in_memory_data_code, tmp_path / "cache_before", given)
  today = [{**spec, "max_dropped_fraction": 1.0} for spec in given]  # the code before's
  after = load_with(ROOT, tmp_path / "cache_after", today)
  for spec, old, new in zip(given, before, after):
    assert old["texts"] == new["texts"], spec
    assert old["vocab"] == new["vocab"], spec
    if spec.get("tokenizer") == "sentencepiece":
      continue  # trained otherwise now (a seeded sample, 8 threads): its own test below
    for split in data.SPLITS:
      for a, b in zip(old["arrays"][split], new["arrays"][split]):
        assert a.dtype == b.dtype and np.array_equal(a, b), (spec, split)
    assert len(old["batches"]) == len(new["batches"])
    for a, b in zip(old["batches"], new["batches"]):
      for key in ("src", "tgt"):
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), spec


def test_sentencepiece_tokens_are_the_models_encoding_of_the_texts(tmp_path, monkeypatch):
  monkeypatch.setenv("SEQ2SEQ_JAX_CACHE", str(tmp_path))
  corpus = debian_like_corpus(tmp_path / "corpus.tsv")
  ds = data.load(config_schema.Dataset(**{**specs(corpus)[2], "max_src_len": 0,
                                          "max_tgt_len": 0}))
  for split in data.SPLITS:
    src, tgt = (np.asarray(x) for x in ds.arrays[split])
    for i, (s, t) in enumerate(ds.texts[split]):
      want_src, want_tgt = ds.src_vocab.sp.encode(s), ds.tgt_vocab.sp.encode(t) + [EOS_ID]
      assert src[i, :len(want_src)].tolist() == want_src and not src[i, len(want_src):].any()
      assert tgt[i, :len(want_tgt)].tolist() == want_tgt and not tgt[i, len(want_tgt):].any()


def test_sentencepiece_on_a_sample_is_the_same_in_every_process(tmp_path):
  """Sentencepiece's own sampling drew another sample in each process; ours is a
  fixed-seed draw of training pairs, the same everywhere."""
  corpus = debian_like_corpus(tmp_path / "corpus.tsv")
  flags = ("--tokenizer=sentencepiece", "--vocab_size=40", "--spm_input_sentence_size=500")
  for cache in ("a", "b"):
    proc = prepare_cli(corpus, tmp_path / cache, *flags)
    assert proc.returncode == 0 and "sentencepiece on 500 sampled pairs" in proc.stderr
  made = [next((tmp_path / c).glob("prepared/*/vocab-*[0-9a-f]/vocab_src.json")).read_bytes()
          for c in ("a", "b")]
  assert made[0] == made[1]
  # the model of those 500 pairs: the training rows drawn with seed 0, in order
  train = data.load(config_schema.Dataset(name=f"tsv:{corpus}", dev_size=100, test_size=100,
                                          max_dropped_fraction=1.0)).texts["train"]
  picked = np.sort(np.random.default_rng(0).choice(len(train), 500, replace=False))
  want = data.SentencePieceVocab.train([train[int(i)][0] for i in picked], 40)
  assert json.loads(made[0]) == want.to_json()


def prepare_cli(corpus: Path, cache: Path, *flags, env_extra=None, **kwargs):
  env = {**os.environ, "SEQ2SEQ_JAX_CACHE": str(cache), **(env_extra or {})}
  return subprocess.run([sys.executable, "-m", "seq2seq_jax.data", "prepare", f"tsv:{corpus}",
                         "--dev_size=100", "--test_size=100", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, **kwargs)


def tree_bytes(root: Path) -> dict:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file() and not p.name.endswith(".lock")}


def test_a_kill_during_prepare_and_a_rerun_give_the_same_files(tmp_path):
  corpus = debian_like_corpus(tmp_path / "corpus.tsv")
  flags = ("--shard_pairs=300", "--workers=1", "--tokenizer=sentencepiece", "--vocab_size=40")
  killed = prepare_cli(corpus, tmp_path / "a", *flags,
                       env_extra={"SEQ2SEQ_JAX_KILL_AT": "shard:train@2"})
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  made = tmp_path / "a" / "prepared"
  assert not list(made.glob("*/tokens-*[0-9a-f]")), "no tokens stage is whole yet"
  assert len(list(made.glob("*/tokens-*.shards/train.*.npz"))) == 3
  again = prepare_cli(corpus, tmp_path / "a", *flags)
  assert again.returncode == 0, again.stderr
  assert "(3 already made)" in again.stderr
  fresh = prepare_cli(corpus, tmp_path / "b", *flags)
  assert fresh.returncode == 0, fresh.stderr
  assert tree_bytes(made) == tree_bytes(tmp_path / "b" / "prepared")
  assert not list(made.glob("*/*.shards")) and not list(made.glob("*/*.tmp"))


def test_sigterm_while_encoding_ends_the_workers_within_seconds(tmp_path):
  """A stop signal while worker processes encode: exit 143 with one line, no worker
  left running, and the same command then finishes the job."""
  rng = np.random.default_rng(0)
  words = np.array([f"w{i}" for i in range(3000)])
  corpus = tmp_path / "big.tsv"
  sides = rng.choice(words, (60_000, 2, 14))  # over PARALLEL_MIN_PAIRS: worker processes
  corpus.write_text("".join(f"{' '.join(s)}\t{' '.join(t)}\n" for s, t in sides))
  env = {**os.environ, "SEQ2SEQ_JAX_CACHE": str(tmp_path / "cache")}
  proc = subprocess.Popen([sys.executable, "-m", "seq2seq_jax.data", "prepare",
                           f"tsv:{corpus}", "--shard_pairs=5000", "--workers=2"], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:
    if line.startswith("encoding"):
      break
  time.sleep(0.5)
  workers = [pid for task in Path(f"/proc/{proc.pid}/task").iterdir()
             for pid in (task / "children").read_text().split()]
  assert workers, "the workers were running"
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  rest = proc.stderr.read()
  assert proc.wait(timeout=30) == 143 and time.time() - sent < 10
  assert rest.strip().splitlines()[-1].startswith("error: stopped by SIGTERM"), rest
  for pid in workers:
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text(
    ).split()[2], f"worker {pid} still running"
  again = prepare_cli(corpus, tmp_path / "cache", "--shard_pairs=5000", "--dev_size=1000",
                      "--test_size=1000")
  assert again.returncode == 0, again.stderr


def mapped(array: np.ndarray) -> bool:
  """Whether `array` is a view of a memory-mapped file."""
  return isinstance(array.base, memoryview) and isinstance(array.base.obj, mmap.mmap)


def test_a_second_load_reads_the_prepared_data_without_tokenizing(tmp_path, monkeypatch):
  monkeypatch.setenv("SEQ2SEQ_JAX_CACHE", str(tmp_path))
  cfg = config_schema.Dataset(name=f"tsv:{debian_like_corpus(tmp_path / 'c.tsv')}",
                              dev_size=100, test_size=100, max_src_len=12,
                              max_dropped_fraction=1.0)
  first = data.load(cfg)
  assert not first.prepared.reused

  def no_tokenizing(*args, **kwargs):
    raise AssertionError("tokenized again")
  monkeypatch.setattr(preparing, "encode_shard", no_tokenizing)
  monkeypatch.setattr(data.Vocab, "encode", no_tokenizing)
  second = data.load(cfg, first.src_vocab, first.tgt_vocab)  # a resumed run's
  assert second.prepared.reused and second.prepared.tokens == first.prepared.tokens
  src = second.arrays["train"][0]
  assert mapped(src.tokens)  # read from disk, not held
  assert np.array_equal(np.asarray(src), np.asarray(first.arrays["train"][0]))
  assert list(second.texts["train"]) == list(first.texts["train"])
  # other length limits: the same tokens, other pairs kept, nothing encoded
  wider = data.load(config_schema.Dataset(**{**config_schema.as_dict(cfg), "max_src_len": 20,
                                             "bucket_boundaries": ()}))
  assert len(wider.texts["train"]) > len(second.texts["train"])


def test_more_dropped_pairs_than_allowed_is_an_error_naming_the_numbers(tmp_path, monkeypatch):
  monkeypatch.setenv("SEQ2SEQ_JAX_CACHE", str(tmp_path))
  corpus = debian_like_corpus(tmp_path / "c.tsv")
  cfg = config_schema.Dataset(name=f"tsv:{corpus}", dev_size=100, test_size=100,
                              max_src_len=12)
  lengths = data.load(config_schema.Dataset(
      **{**config_schema.as_dict(cfg), "max_src_len": 0})).arrays["train"][0].lengths
  over = int(np.sum(lengths > 12))  # counted by hand from the unfiltered tokens
  with pytest.raises(ValueError) as e:
    data.load(cfg)
  assert str(e.value).startswith(
      f"train: {over} of {len(lengths)} pairs ({100 * over / len(lengths):.1f}%) are longer "
      "than dataset.max_src_len=12 / max_tgt_len=256 tokens, more than "
      "dataset.max_dropped_fraction=0.01: check the tokenizer")
  allowed = data.load(config_schema.Dataset(**{**config_schema.as_dict(cfg),
                                               "max_dropped_fraction": over / len(lengths)}))
  assert len(allowed.texts["train"]) == len(lengths) - over


def test_the_main_cli_says_the_dropped_pairs_error_in_one_line(tmp_path):
  corpus = debian_like_corpus(tmp_path / "c.tsv", pairs=600)
  env = {**os.environ, "SEQ2SEQ_JAX_CACHE": str(tmp_path / "cache")}
  proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.main",
                         "--config=configs/default.py:quick", f"--config.dataset.name=tsv:{corpus}",
                         "--config.dataset.dev_size=50", "--config.dataset.test_size=50",
                         "--config.dataset.max_src_len=5", f"--workdir={tmp_path / 'w'}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: train: ") and "dataset.max_dropped_fraction=0.01" in last, \
      proc.stderr
  assert "Traceback" not in proc.stderr and not (tmp_path / "w").exists()


def _resident_bytes(*objects) -> int:
  """Bytes of the numpy arrays in `objects` (and their attributes) held in memory:
  a memory map's pages are the file's, read on demand, not counted."""
  seen, total, todo = set(), 0, list(objects)
  while todo:
    x = todo.pop()
    if id(x) in seen:
      continue
    seen.add(id(x))
    if isinstance(x, np.ndarray):
      base = x
      while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
      total += 0 if isinstance(x, np.memmap) or not isinstance(base, np.ndarray) else x.nbytes
    elif isinstance(x, (list, tuple)):
      todo += list(x)
    elif hasattr(x, "__dict__"):
      todo += list(vars(x).values())
  return total


def test_a_training_process_holds_a_few_bytes_a_pair_so_40m_pairs_fit(tmp_path, monkeypatch):
  """The projection of issue 28: what training holds of the corpus (the lengths, an
  epoch's order of batches) is linear in the pairs with a small slope; the tokens and
  texts stay on disk. Measured at two sizes, projected to 40M pairs: under 1.5 GB."""
  monkeypatch.setenv("SEQ2SEQ_JAX_CACHE", str(tmp_path))
  held = {}
  for pairs in (2000, 8000):
    corpus = debian_like_corpus(tmp_path / f"c{pairs}.tsv", pairs=pairs)
    ds = data.load(config_schema.Dataset(name=f"tsv:{corpus}", dev_size=50, test_size=50,
                                         bucket_boundaries=(4, 8, 16), max_src_len=14,
                                         max_dropped_fraction=1.0))  # some pairs dropped
    batches = data.TrainBatches(*ds.arrays["train"], 16, 0, (4, 8, 16))
    batches(0)  # an epoch's plan made
    held[len(ds.texts["train"])] = _resident_bytes(ds.arrays["train"], ds.texts["train"],
                                                   batches)
    assert mapped(ds.arrays["train"][0].tokens)
  (n1, b1), (n2, b2) = sorted(held.items())
  slope = (b2 - b1) / (n2 - n1)
  assert slope < 40, held  # bytes a pair
  assert b2 + slope * (40e6 - n2) < 1.5 * 2**30
