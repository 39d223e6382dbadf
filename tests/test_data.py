"""Generated datasets, vocabularies and the resumable batch order."""


import numpy as np
import pytest

from configs import default
from seq2seq_jax import config_schema, data
from seq2seq_jax.data.vocab import Vocab, detokenize, tokenize
from seq2seq_jax.tokens import EOS_ID, PAD_ID, UNK_ID


def dataset_config(**overrides):
  cfg = default.get_config("quick").dataset
  cfg.update(overrides)
  return cfg


def test_num2words_by_length_has_every_length_in_every_split():
  """The default split: dev and test stratified by source words, the small numbers
  (below 100 of 10,000: the lowest 1%) in training and repeated to a quarter of it,
  every length at least 2% of it before those repeats."""
  from num2words import num2words
  cfg = dataset_config(max_number=9999, dev_size=300, test_size=300)
  assert cfg.number_split == "by_length"
  texts = data.load(cfg).texts
  number = {num2words(n, lang="en"): n for n in range(10_000)}
  lengths = {split: [len(tokenize(s, "word")) for s, _ in texts[split]] for split in data.SPLITS}
  every = sorted({len(tokenize(num2words(n, lang="en"), "word")) for n in range(10_000)})
  for split in data.SPLITS:
    assert sorted(set(lengths[split])) == every, split
  assert len(texts["dev"]) == len(texts["test"]) == 300
  dev, test = ({s for s, _ in texts[split]} for split in ("dev", "test"))
  assert not dev & test
  train = [number[s] for s, _ in texts["train"]]
  assert set(range(100)) <= set(train)  # every small number is trained on ...
  assert sum(n < 100 for n in train) / len(train) > 0.24  # ... as a quarter of it
  train_lengths = [len(tokenize(s, "word")) for s, _ in texts["train"]]
  for length in every:  # the rare lengths repeated to 2% of the pairs before their repeats
    assert train_lengths.count(length) / len(train) > 0.018, length
  held = {number[s] for s in dev | test}
  assert not {n for n in held if n >= 100} & set(train)  # the others are held out
  assert set(range(100, 10_000)) - held <= set(train)  # and all the rest trained on
  # Each length: an equal share of the 600 held out, or all it can give (the small
  # numbers of the length and half of the others) when that is less.
  words = {n: len(tokenize(num2words(n, lang="en"), "word")) for n in range(10_000)}
  can_give = {length: sum(1 for n in range(100) if words[n] == length) +
              sum(1 for n in range(100, 10_000) if words[n] == length) // 2 for length in every}
  held_by_length = {length: lengths["dev"].count(length) + lengths["test"].count(length)
                    for length in every}
  top = max(held_by_length.values())
  for length, count in held_by_length.items():
    assert count >= top - 2 or count == can_give[length], (length, held_by_length, can_give)
  for s, t in texts["dev"]:
    assert t == num2words(number[s], lang="de")


def test_num2words_pairs_and_split():
  ds = data.load(dataset_config(max_number=999, dev_size=50, test_size=50, number_split="hash"))
  assert sum(len(ds.texts[s]) for s in data.SPLITS) == 1000
  assert len(ds.texts["dev"]) == len(ds.texts["test"]) == 50
  sources = [s for split in data.SPLITS for s, _ in ds.texts[split]]
  assert len(set(sources)) == 1000  # every number once, no overlap between splits
  pairs = dict(p for split in data.SPLITS for p in ds.texts[split])
  assert pairs["three hundred and forty-two"] == "dreihundertzweiundvierzig"
  again = data.load(dataset_config(max_number=999, dev_size=50, test_size=50,
                                   number_split="hash"))
  assert again.texts == ds.texts  # deterministic
  src, tgt = ds.arrays["dev"]
  for row_src, row_tgt, (s, t) in zip(src, tgt, ds.texts["dev"]):
    assert ds.tgt_vocab.decode(row_tgt) == t
    assert detokenize(ds.src_vocab.tokens(row_src), "word") == s
    assert EOS_ID in row_tgt.tolist()


@pytest.mark.parametrize("name,check", [
    ("copy", lambda s, t: s == t),
    ("reverse", lambda s, t: s.split()[::-1] == t.split()),
    ("sort", lambda s, t: sorted(s.split()) == t.split()),
    ("addition", lambda s, t: sum(map(int, s.split("+"))) == int(t)),
])
def test_synthetic_tasks(name, check):
  ds = data.load(dataset_config(name=name, train_size=200, dev_size=20, test_size=20))
  for split in data.SPLITS:
    assert all(check(s, t) for s, t in ds.texts[split])
  assert len(ds.texts["train"]) == 200


def test_vocab_round_trip_and_unknown():
  vocab = Vocab.build(["a b c", "c d"], "word")
  assert vocab.itos[:4] == ["<pad>", "<sos>", "<eos>", "<unk>"]
  assert vocab.encode("c a zz", eos=True) == [vocab.stoi["c"], vocab.stoi["a"], UNK_ID, EOS_ID]
  assert vocab.decode([vocab.stoi["a"], vocab.stoi["b"], EOS_ID, vocab.stoi["c"]]) == "a b"
  restored = Vocab.from_json(vocab.to_json())
  assert restored.itos == vocab.itos and restored.kind == "word"
  assert tokenize("forty-two, five", "word") == ["forty", "-", "two", ",", "five"]
  assert detokenize(["forty", "-", "two", ",", "five"], "word") == "forty-two, five"


def test_train_batches_cover_each_epoch_once_and_are_a_function_of_position():
  src = np.arange(10, dtype=np.int32)[:, None] + 4
  tgt = np.arange(10, dtype=np.int32)[:, None] + 4
  batches = data.TrainBatches(src, tgt, batch_size=3, seed=0)
  epoch0 = np.concatenate([batches(i)["src"][:, 0] for i in range(3)])
  assert len(set(epoch0.tolist())) == 9  # 3 batches of 3 distinct rows (one left over)
  epoch1 = np.concatenate([batches(i)["src"][:, 0] for i in range(3, 6)])
  assert epoch0.tolist() != epoch1.tolist()  # reshuffled
  fresh = data.TrainBatches(src, tgt, batch_size=3, seed=0)
  np.testing.assert_array_equal(fresh(4)["src"], batches(4)["src"])  # resumable
  other = data.TrainBatches(src, tgt, batch_size=3, seed=1)
  assert other(0)["src"].tolist() != batches(0)["src"].tolist()


def test_bad_dataset_config():
  with pytest.raises(ValueError, match=r"unknown dataset.name 'wmt'; valid datasets: num2words"):
    data.load(config_schema.Dataset(name="wmt"))
  with pytest.raises(ValueError, match=r"leaves no training pairs"):
    data.load(dataset_config(max_number=99, dev_size=60, test_size=50))
  with pytest.raises(ValueError, match=r"batch_size=64 is larger than the 10 training pairs"):
    data.TrainBatches(np.zeros((10, 2)), np.zeros((10, 2)), 64, 0)


def test_long_pairs_are_dropped_from_training_and_cut_in_dev_and_test(caplog):
  """Before, dev and test kept their long sentences at full width: one 20,000-word
  dev line stalled every evaluation (issue 32, item 3)."""
  ds = data.load(dataset_config(max_number=999, max_src_len=4, max_tgt_len=20,
                                max_dropped_fraction=1.0))
  assert all(np.sum(row != PAD_ID) <= 20 for row in ds.arrays["train"][1])
  assert all(np.sum(row != PAD_ID) <= 4 for row in ds.arrays["train"][0])
  assert "dropped" in caplog.text
  for split in ("dev", "test"):
    src, tgt = ds.arrays[split]
    assert src.shape[1] == 4 and tgt.shape[1] <= 20
    ids = [ds.src_vocab.encode(s) for s, _ in ds.texts[split]]
    long = [i for i, row in enumerate(ids) if len(row) > 4]
    assert long, split  # the texts (the references) stay whole
    for i, row in enumerate(ids):
      assert list(src[i][src[i] != PAD_ID]) == row[:4]
    assert f"{split}: {len(long)} of {len(ids)} sources longer than dataset.max_src_len=4 are " \
        "cut to it" in caplog.text


def test_bucketed_batches_fixed_shapes_each_pair_once_resumable():
  rng = np.random.default_rng(0)
  n, width = 103, 12
  lengths = rng.integers(1, width + 1, n)
  src = np.zeros((n, width), np.int32)
  tgt = np.zeros((n, width), np.int32)
  for i, length in enumerate(lengths):
    src[i, :length] = 4 + i  # row i is recognisable by its first token
    tgt[i, :max(1, length - 1)] = 4
  batches = data.TrainBatches(src, tgt, batch_size=8, seed=3, boundaries=(3, 6))
  assert batches.shapes == [(3, 3), (6, 6), (12, 12)]
  for epoch in range(2):
    seen = []
    for i in range(epoch * batches.per_epoch, (epoch + 1) * batches.per_epoch):
      b = batches(i)
      assert (b["src"].shape[1], b["tgt"].shape[1]) in batches.shapes
      assert b["src"].shape[0] == 8
      for row_src, row_tgt in zip(b["src"], b["tgt"]):
        if row_src[0] == PAD_ID:  # filler row: all padding, no loss
          assert not row_src.any() and not row_tgt.any()
          continue
        i_row = int(row_src[0]) - 4
        assert np.sum(row_src != PAD_ID) == lengths[i_row]  # never cut
        seen.append(i_row)
    assert sorted(seen) == list(range(n))  # every pair exactly once per epoch
  fresh = data.TrainBatches(src, tgt, batch_size=8, seed=3, boundaries=(3, 6))
  for position in (0, 5, batches.per_epoch + 2):
    np.testing.assert_array_equal(fresh(position)["src"], batches(position)["src"])


def test_sentencepiece_round_trip_and_special_ids(tmp_path):
  from seq2seq_jax.data.vocab import SentencePieceVocab, load_vocab
  texts = [f"Das ist Satz Nummer {i} über {w}." for i, w in
           enumerate(["Häuser", "Katzen", "Bäume", "Straßen"] * 30)]
  vocab = SentencePieceVocab.train(texts, vocab_size=60, model_type="bpe")
  assert [vocab.sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
  for text in texts[:10] + ["Straßen über Bäume."]:
    ids = vocab.encode(text, eos=True)
    assert ids[-1] == EOS_ID and PAD_ID not in ids
    assert vocab.decode(ids + [PAD_ID, PAD_ID]) == text
  path = tmp_path / "vocab.json"
  vocab.save(path)
  assert load_vocab(path).encode(texts[0]) == vocab.encode(texts[0])


def test_data_stats_reads_a_compressed_corpus_and_the_configured_tokenizer(tmp_path):
  """Before: the origin column of a .gz corpus came out as `(- N)` (read as plain
  text) and lengths were in words whatever the tokenizer."""
  import gzip
  import subprocess
  import sys
  rows = [(f"das ist satz {i}", f"this is sentence {i}", "bookworm" if i % 3 else "trixie")
          for i in range(3000)]
  path = tmp_path / "corpus.tsv.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.writelines("\t".join(r) + "\n" for r in rows)
  proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.data", "stats", f"tsv:{path}",
                         "--tokenizer=char"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  train = next(ln for ln in lines if ln.startswith("train:"))
  n_train = int(train.split()[1])
  # every pair's origin is known: the counts add up to the split, none is "-"
  counts = dict(part.rsplit(" ", 1) for part in train[train.index("(") + 1:-1].split(", "))
  assert set(counts) == {"bookworm", "trixie"} and sum(map(int, counts.values())) == n_train
  source = lines[lines.index(train) + 1]
  # characters: "das ist satz 1234" has 16 or 17; the longest is "das ist satz 2999"
  assert "char vocabulary" in source and "max 17;" in source, source
  assert "<unk> 0.00% of tokens" in source
  dev_source = lines[[i for i, ln in enumerate(lines) if ln.startswith("dev:")][0] + 1]
  assert "<unk>" in dev_source
