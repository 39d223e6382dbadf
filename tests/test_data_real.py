"""Loaders of real corpora: TSV with bad lines, the hash split, Debian extractors on fixtures."""

import concurrent.futures
import gzip
import logging
import struct
import time
import zlib

import numpy as np
import pytest

from configs import default
from seq2seq_jax import data
from seq2seq_jax.data import debian, tsv


def test_tsv_bad_lines_are_counted_reported_and_skipped(tmp_path, caplog):
  path = tmp_path / "corpus.tsv.gz"
  lines = [b"ein Haus\ta house\tding", b"", b"no tab here", b"\xff\xfe broken\tx",
           b"\tempty source", b"zwei Katzen\ttwo cats"]
  path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
  with caplog.at_level(logging.WARNING):
    pairs, bad = tsv.read_pairs(path)
  assert pairs == [("ein Haus", "a house"), ("zwei Katzen", "two cats")]
  assert bad == {"empty line": [2], "no tab": [3], "not UTF-8": [4],
                 "empty source or target": [5]}
  assert f"{path}:3" in caplog.text and f"{path}:4" in caplog.text


def test_tsv_without_usable_pairs_is_one_clear_error(tmp_path):
  path = tmp_path / "bad.tsv"
  path.write_text("only one column\n\n")
  with pytest.raises(ValueError, match=r"bad.tsv: no usable pair \(skipped: 1 no tab, 1 empty"):
    tsv.read_pairs(path)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tsv.read_pairs(tmp_path / "missing.tsv")


def test_hash_split_is_deterministic_and_keeps_a_source_in_one_split():
  pairs = [(f"s{i % 300}", f"t{i}") for i in range(900)]  # every source three times
  split = tsv.split_by_hash(pairs, 20, 30)
  again = tsv.split_by_hash(list(reversed(pairs)), 20, 30)
  assert split == again
  sources = {name: {s for s, _ in split[name]} for name in split}
  assert len(sources["dev"]) == 20 and len(sources["test"]) == 30
  assert not (sources["dev"] & sources["train"]) and not (sources["test"] & sources["train"])
  assert sum(len(v) for v in split.values()) == 900


def test_tsv_dataset_trains_through_the_registry(tmp_path):
  path = tmp_path / "c.tsv"
  path.write_text("".join(f"w{i} w{i + 1}\tv{i} v{i + 1}\n" for i in range(100)))
  cfg = default.get_config("quick").dataset
  cfg.update(name=f"tsv:{path}", dev_size=10, test_size=10)
  ds = data.load(cfg)
  assert len(ds.texts["train"]) == 80
  src, tgt = ds.arrays["train"]  # the vocabularies are built on train
  assert [ds.tgt_vocab.decode(row) for row in tgt] == [t for _, t in ds.texts["train"]]
  assert [ds.src_vocab.decode(row) for row in src] == [s for s, _ in ds.texts["train"]]
  assert np.all(ds.arrays["dev"][0][:, 0] > 0)


def test_ding_example_sentences():
  lines = [
      "# comment\n",
      "Haus {n} | Häuser {pl} | Das Haus ist sehr alt. :: "
      "house | houses | The house is very old.\n",
      "Abend {m} | Guten Abend! :: evening | Good evening!\n",  # 2 words: not a sentence
      "a | b :: only one side\n",
      "Er kommt morgen [ugs.]. :: He comes tomorrow {adv}.\n",
  ]
  assert list(debian.ding_sentences(lines)) == [
      ("Das Haus ist sehr alt.", "The house is very old."),
      ("Er kommt morgen .", "He comes tomorrow .")]


def test_libreoffice_paragraphs_align_by_file_and_id(tmp_path):
  for lang, body in [
      ("en-US", '<p id="par_1">Click the button. Then close it.</p><h1 id="hd_2">Two words</h1>'
                '<p id="par_3">Only in English here.</p>'),
      ("de", '<p id="par_1">Klicken Sie die Schaltfläche. Dann schließen Sie sie.</p>'
             '<h1 id="hd_2">Zwei Wörter</h1><p id="par_3">Nur ein Satz. Oder zwei Sätze.</p>')]:
    f = tmp_path / "usr/share/libreoffice/help" / lang / "text/a.html"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(f"<html><body>{body}</body></html>")
  assert list(debian.libreoffice_pairs(tmp_path)) == [
      ("Click the button.", "Klicken Sie die Schaltfläche."),
      ("Then close it.", "Dann schließen Sie sie.")]


def _write_sword(directory, verses):
  """A zText module as DATA.md describes it: one zlib block holding all verses."""
  directory.mkdir(parents=True)
  text = b"".join(v.encode() for v in verses)
  block = zlib.compress(text)
  (directory / "nt.bzz").write_bytes(block)
  (directory / "nt.bzs").write_bytes(struct.pack("<III", 0, len(block), len(text)))
  index, offset = b"", 0
  for v in verses:
    index += struct.pack("<IIH", 0, offset, len(v.encode()))
    offset += len(v.encode())
  (directory / "nt.bzv").write_bytes(index)


def test_concurrent_prepares_build_the_corpus_once(tmp_path, monkeypatch):
  """Sweep members that start together: one builds the corpus, the others wait for it."""
  fetches = []

  def slow_fetch(packages, root):
    fetches.append(packages)
    time.sleep(0.5)  # the others arrive while this one is still building
    return root / "tree"

  monkeypatch.setattr(debian, "fetch_packages", slow_fetch)
  monkeypatch.setattr(debian, "bible_pairs", lambda tree: [("In the beginning.", "En el.")])
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    paths = list(pool.map(lambda _: debian.prepare("en-es", tmp_path), range(4)))
  assert len(fetches) == 1
  assert paths == [tmp_path / "debian" / "en-es.tsv"] * 4
  assert paths[0].read_text() == "In the beginning.\tEn el.\tbible\n"


def test_sword_verses_align_and_lose_their_markup(tmp_path):
  base = tmp_path / "usr/share/sword/modules/texts/ztext"
  _write_sword(base / "engWEB2015eb", ["", "<w>In</w> the beginning<note>n.</note> , God.",
                                       "Jesus wept ."])
  _write_sword(base / "spaRV1909eb", ["", "En el principio, Dios.", "Y lloró Jesús."])
  assert list(debian.bible_pairs(tmp_path)) == [
      ("In the beginning, God.", "En el principio, Dios."), ("Jesus wept.", "Y lloró Jesús.")]


def test_tfds_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
  """No network (monkeypatched): a clear error within seconds, no download tried."""
  import socket
  import time

  import tensorflow_datasets as tfds

  from seq2seq_jax.data import tfds_source

  def no_network(*args, **kwargs):
    raise OSError("network is unreachable (test)")

  def no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")

  monkeypatch.setattr(socket, "create_connection", no_network)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
  cfg = default.get_config("quick").dataset
  cfg.update(name="tfds:ted_hrlr_translate/pt_to_en", data_dir=str(tmp_path))
  start = time.time()
  with pytest.raises(tfds_source.DatasetUnavailable) as info:
    data.load(cfg)
  assert time.time() - start < 10
  message = str(info.value)
  assert "storage.googleapis.com cannot be reached" in message
  assert "download_and_prepare" in message and "debian:de-en" in message
  cfg.download = False
  with pytest.raises(tfds_source.DatasetUnavailable, match="dataset.download is False"):
    data.load(cfg)
