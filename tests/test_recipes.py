"""The papers' training recipes (issue 29): gradient accumulation against one batch K
times as big (the code path of a plain batch, unchanged), token batches against their
definition, resumed runs against uninterrupted ones."""

import gzip
import json
import os
from pathlib import Path
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
import sacrebleu
from test_prepare import debian_like_corpus
from test_regression import without_timing

from seq2seq_jax import config_schema, config_utils, data, faults, models
from seq2seq_jax.data import tsv
from seq2seq_jax.training import optim, stack, step

ROOT = Path(__file__).resolve().parent.parent
QUICK = f"--config={ROOT / 'configs' / 'default.py'}:quick"  # 60 steps, saves 20 30 40 60
VOCAB, ROWS, LEN = 11, 4, 7


def _config(family: str, normalization: str, accum: int, **train):
  base = config_utils.load_module(ROOT / "configs" / "default.py").get_config("quick")
  base.model.family = family
  base.model.dropout = 0.0
  base.train.loss_normalization = normalization
  base.train.grad_accum_steps = accum
  base.train.optimizer = "adam"
  base.train.learning_rate = 1e-2
  for field, value in train.items():
    base.train[field] = value
  return config_schema.build(base)


def _batch(rng, rows):
  """Random pairs of varying lengths; a few rows all padding (bucket fillers)."""
  src = rng.integers(3, VOCAB, (rows, LEN)).astype(np.int32)
  tgt = rng.integers(3, VOCAB, (rows, LEN)).astype(np.int32)
  for side in (src, tgt):
    lengths = rng.integers(1, LEN + 1, rows)
    side[np.arange(LEN)[None, :] >= lengths[:, None]] = 0
  tgt[-1] = 0  # a filler row: no sentence, no tokens
  return {"src": src, "tgt": tgt}


def _train(configs, batches, accum):
  """3 updates of a stack of `configs` (one member: the solo step) on `batches`
  (`[rows, len]` each, every member the same), `accum` micro-batches each."""
  model = models.build(configs[0].model, VOCAB, VOCAB)
  tx = optim.optimizer_from_config(configs[0].train)
  states = [step.init_state(model, tx, jax.random.PRNGKey(0), batches[0]) for _ in configs]
  step_fn = jax.jit(stack.make_stacked_train_step(model, configs[0].train, False, None,
                                                  len(configs)))
  state = stack.stack_trees(states)
  rngs = stack.stack_trees([jax.random.PRNGKey(c.seed) for c in configs])
  hypers = stack.stack_trees([stack.member_hyper(c) for c in configs])
  alive = np.ones(len(configs), bool)
  losses = []
  for batch in batches:
    stacked = stack.stacked_batch([lambda i, b=batch: b] * len(configs), 0, accum)
    state, metrics = step_fn(state, stacked, rngs, hypers, alive)
    losses.append(np.asarray(metrics["loss"]))
  # The attention keys' biases are left out: their gradient is zero in exact arithmetic
  # (a softmax is blind to a shift shared by every key), and Adam scales the rounding
  # noise in its place to steps of +-lr, in both runs differently.
  return [x for path, x in jax.tree_util.tree_leaves_with_path(state.params)
          if "'key']['bias']" not in jax.tree_util.keystr(path)], losses


@pytest.mark.parametrize("family,normalization,members", [  # each of the 3 choices both ways
    ("rnn", "sentences", 2), ("transformer", "tokens", 1)])
def test_k_micro_batches_make_the_update_of_one_batch_k_times_as_big(family, normalization,
                                                                      members):
  """Params after 3 updates within 1e-6 relative (the norm of the difference over the
  norm of all parameters; Adam amplifies a near-zero gradient's rounding in single
  elements), the loss of each update alike; with 2 members, a stack (lr apart)."""
  rng = np.random.default_rng(0)
  batches = [_batch(rng, 3 * ROWS) for _ in range(3)]
  configs = [_config(family, normalization, 1, learning_rate=1e-2 * (k + 1))
             for k in range(members)]
  big, big_losses = _train(configs, batches, 1)
  accumulated = [_config(family, normalization, 3, learning_rate=1e-2 * (k + 1))
                 for k in range(members)]
  micro, micro_losses = _train(accumulated, batches, 3)
  big, micro = (np.concatenate([np.ravel(x) for x in leaves]) for leaves in (big, micro))
  assert np.linalg.norm(big - micro) <= 1e-6 * np.linalg.norm(big), (
      np.linalg.norm(big - micro) / np.linalg.norm(big))
  np.testing.assert_allclose(micro_losses, big_losses, rtol=1e-6)
  one = np.concatenate([np.ravel(x) for x in _train(configs, batches[:2], 1)[0]])
  assert np.linalg.norm(one - big) > 1e-3 * np.linalg.norm(big)  # the third update counts


def _ragged(lengths, width):
  """Pair i's tokens are all `i + 3`: a batch's rows name their pairs."""
  out = np.zeros((len(lengths), width), np.int32)
  for i, n in enumerate(lengths):
    out[i, :n] = i + 3
  return out


@pytest.mark.parametrize("boundaries,micro,multiple", [
    ((4, 8, 16), 1, 1), ((4, 8, 16), 2, 1), ((5, 11), 3, 2), ((), 1, 1)])
def test_token_batches_stay_within_n_tokens_and_hold_each_pair_once_an_epoch(
    boundaries, micro, multiple):
  rng = np.random.default_rng(1)
  pairs, n_tokens = 500, 100
  src_len, tgt_len = rng.integers(1, 21, pairs), rng.integers(1, 25, pairs)
  batches = data.TrainBatches(_ragged(src_len, 20), _ragged(tgt_len, 24), 64, seed=3,
                              boundaries=boundaries, batch_tokens=n_tokens,
                              micro_batches=micro, rows_multiple=multiple)
  for epoch in range(2):
    seen = []
    for i in range(epoch * batches.per_epoch, (epoch + 1) * batches.per_epoch):
      b = batches(i)
      rows, width = b["src"].shape[0], max(b["src"].shape[1], b["tgt"].shape[1])
      assert rows % micro == 0 and (rows // micro) % multiple == 0
      assert rows // micro * width <= n_tokens  # each micro-batch, padding included
      real = (b["tgt"] != 0).any(1)
      ids = b["src"][real, 0] - 3
      np.testing.assert_array_equal(b["tgt"][real, 0] - 3, ids)  # the pairs stay whole
      np.testing.assert_array_equal((b["src"][real] != 0).sum(1), src_len[ids])
      np.testing.assert_array_equal((b["tgt"][real] != 0).sum(1), tgt_len[ids])
      seen += ids.tolist()
    if boundaries:  # every pair once an epoch
      assert sorted(seen) == list(range(pairs))
    else:  # the remainder of an epoch dropped, as with sentence batches
      assert len(set(seen)) == len(seen) == batches.per_epoch * batches.batch_size
      assert pairs - len(seen) < batches.batch_size


def test_token_batches_smaller_than_one_row_are_one_error_line():
  src = tgt = _ragged(np.full(10, 30), 30)
  with pytest.raises(ValueError, match=r"train.batch_tokens=20 holds less than one row of the "
                                       r"longest training pairs \(30 tokens"):
    data.TrainBatches(src, tgt, 4, 0, (), batch_tokens=20)



def _corpus_with_dev_and_test(directory: Path) -> tuple[Path, list, list]:
  """A TSV corpus, its own dev file (two sources of the corpus among its pairs), a
  second dev file (`news.2014.tsv`, 7 of the test pairs) and a compressed test file."""
  corpus = debian_like_corpus(directory / "train.tsv", 600)
  pairs = tsv.read_pairs(corpus)[0]
  dev = [(f"dev source {i} .", f"dev target {i} .") for i in range(30)] + [pairs[5], pairs[9]]
  test = [(f"test source {i} .", f"test target {i} .") for i in range(20)]
  (directory / "dev.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in dev))
  (directory / "news.2014.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in test[:7]))
  with gzip.open(directory / "test.tsv.gz", "wt") as f:
    f.write("".join(f"{s}\t{t}\n" for s, t in test))
  return corpus, dev, test


def test_a_tsv_corpus_is_evaluated_on_its_own_dev_and_test_files(tmp_path, monkeypatch,
                                                                   caplog):
  monkeypatch.setenv("SEQ2SEQ_JAX_CACHE", str(tmp_path / "cache"))
  corpus, dev, test = _corpus_with_dev_and_test(tmp_path)
  pairs = tsv.read_pairs(corpus)[0]
  cfg = config_schema.Dataset(name=f"tsv:{corpus}", dev_path=str(tmp_path / "dev.tsv"),
                              test_path=str(tmp_path / "test.tsv.gz"))
  ds = data.load(cfg)
  assert ds.texts["dev"] == dev and ds.texts["test"] == test  # as given, in their order
  assert ds.extra_dev == []
  two = data.load(config_schema.Dataset(
      name=f"tsv:{corpus}", dev_path=f"{tmp_path / 'dev.tsv'}, {tmp_path / 'news.2014.tsv'}",
      test_path=str(tmp_path / "test.tsv.gz")))
  assert two.extra_dev == ["dev-news"] and two.texts["dev-news"] == test[:7]
  assert two.texts["dev"] == dev and sorted(two.texts["train"]) == sorted(ds.texts["train"])
  held_out = {s for s, _ in dev + test}
  train = [p for p in pairs if p[0] not in held_out]
  assert sorted(ds.texts["train"]) == sorted(train)
  assert (f"train: dropped {len(pairs) - len(train)} of {len(pairs)} pairs whose source is "
          "also in dataset.dev_path / test_path") in caplog.text
  assert len(pairs) - len(train) >= 2  # sources repeat in the corpus: each pair of them goes
  # Only a dev file: the test split still held out by hash from the corpus, dev_size unused.
  only_dev = data.load(config_schema.Dataset(name=f"tsv:{corpus}", test_size=50,
                                             dev_path=str(tmp_path / "dev.tsv")))
  by_hash = tsv.split_by_hash(pairs, 0, 50)
  assert only_dev.texts["dev"] == dev and only_dev.texts["test"] == by_hash["test"]
  assert sorted(only_dev.texts["train"]) == sorted(p for p in by_hash["train"]
                                                   if p[0] not in {s for s, _ in dev})


def test_subword_samples_spell_the_same_text_anew_each_epoch_and_again_on_resume(
    tmp_path, monkeypatch):
  monkeypatch.setenv("SEQ2SEQ_JAX_CACHE", str(tmp_path / "cache"))
  config = config_utils.load_module(ROOT / "configs" / "default.py").get_config("quick")
  config.dataset.name = f"tsv:{debian_like_corpus(tmp_path / 'c.tsv', 600)}"
  config.dataset.update(tokenizer="sentencepiece", vocab_size=60, subword_alpha=0.5)
  config = config_schema.build(config)
  dataset = data.load(config.dataset)
  sampled = data.TrainBatches.from_config(config, dataset)
  best = data.TrainBatches(*dataset.arrays["train"], 32, config.seed,
                           config.dataset.bucket_boundaries)
  vocabs = (dataset.src_vocab, dataset.tgt_vocab)
  changed = 0
  for position in (0, 1, sampled.per_epoch + 1):
    mine, theirs = sampled(position), best(position)
    for side, vocab in zip(("src", "tgt"), vocabs):
      for a, b in zip(mine[side], theirs[side]):
        assert vocab.decode(a) == vocab.decode(b)  # another spelling of the same text
        changed += not np.array_equal(a, b)
      assert (mine[side][:, 0] == 0).sum() == (theirs[side][:, 0] == 0).sum()  # fillers stay
  assert changed > 30  # of 2 x 3 x 32 rows (48 on an AMD EPYC)
  rows = sampled._plan[0][0]
  first = [np.array(x) for x in (best(0)["src"], best(0)["tgt"])]
  again = data.TrainBatches.from_config(config, dataset)  # a resumed run's batches
  np.testing.assert_array_equal(again(0)["src"], sampled(0)["src"])
  epochs = [sampled.sampler(rows, epoch, first)[0] for epoch in (0, 1)]
  assert (epochs[0] != epochs[1]).any(axis=1).sum() >= 2  # each epoch draws afresh (4 of 32)
  for split in ("dev", "test"):  # evaluation reads the best segmentation
    src = dataset.arrays[split][0]
    assert [dataset.src_vocab.encode(s) for s, _ in dataset.texts[split][:5]] == \
        [list(r[r > 0]) for r in np.asarray(src[:5])]


def test_dev_and_test_files_are_refused_for_a_generated_task_and_named_when_missing(tmp_path):
  for flags, message in [
      (["--config.dataset.dev_path=dev.tsv"], "error: dataset.dev_path needs a TSV corpus "
       "(dataset.name=tsv:PATH or debian:PAIR), not 'num2words_en_de', whose splits are given"),
      ([f"--config.dataset.name=tsv:{debian_like_corpus(tmp_path / 'c.tsv', 50)}",
        f"--config.dataset.test_path={tmp_path / 'nope.tsv'}"],
       f"error: dataset.test_path={tmp_path / 'nope.tsv'}: the file {tmp_path / 'nope.tsv'} "
       "does not exist")]:
    proc = subprocess.run([sys.executable, "-m", "seq2seq_jax.main", QUICK, *flags,
                           f"--workdir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_recipe_killed_and_resumed_ends_as_the_uninterrupted_run(tmp_path):
  """Every new field at once (token batches, accumulation, AdamW, the plateau schedule,
  the weights' moving average, subword sampling, a corpus's own dev and test files and a
  second dev set), SIGKILLed in the middle of a save (after two reductions of the rate);
  the predictions have the files' lines, and translate serves the average, which the
  run evaluated (the final test: step 60's)."""
  corpus, dev, test = _corpus_with_dev_and_test(tmp_path)
  recipe = ["--config.train.grad_accum_steps=2", "--config.train.batch_tokens=200",
            "--config.train.optimizer=adamw", "--config.train.weight_decay=0.01",
            "--config.train.ema_decay=0.9", "--config.train.lr_schedule=plateau",
            "--config.train.plateau_patience=1", "--config.eval.every_steps=10",
            # a dev loss that never improves after the first evaluation: down at each one
            "--config.train.early_stopping.metric=loss",
            "--config.train.early_stopping.min_delta=1000",
            "--config.dataset.tokenizer=sentencepiece", "--config.dataset.vocab_size=60",
            "--config.dataset.subword_alpha=0.1",
            f"--config.dataset.name=tsv:{corpus}",
            f"--config.dataset.dev_path={tmp_path}/dev.tsv,{tmp_path}/news.2014.tsv",
            f"--config.dataset.test_path={tmp_path}/test.tsv.gz"]

  def main(workdir, *env):
    return subprocess.run([sys.executable, "-m", "seq2seq_jax.main", QUICK, *recipe,
                           f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **dict(env)})
  whole = main(tmp_path / "whole")
  assert whole.returncode == 0, whole.stderr
  killed = main(tmp_path / "killed", (faults.ENV, "saving@40"))
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  resumed = main(tmp_path / "killed")
  assert resumed.returncode == 0, resumed.stderr
  for name in ("metrics.jsonl", "predictions_dev.txt", "predictions_test.txt"):
    mine, theirs = ((tmp_path / w / name).read_bytes() for w in ("killed", "whole"))
    if name == "metrics.jsonl":
      mine, theirs = without_timing(mine), without_timing(theirs)
    assert mine == theirs, name
  rates = [json.loads(ln)["learning_rate"] for ln in (tmp_path / "whole" / "metrics.jsonl")
           .read_text().splitlines() if '"train"' in ln]
  peak = 3e-3  # configs/default.py; the rate goes down after each evaluation from step 20 on
  np.testing.assert_allclose(rates, [peak, peak, peak / 2, peak / 4, peak / 8, peak / 16],
                             rtol=1e-6)
  for split, pairs in (("dev", dev), ("test", test), ("dev-news", test[:7])):
    assert len((tmp_path / "whole" / f"predictions_{split}.txt").read_text().splitlines()) == \
        len(pairs)
  splits = [json.loads(ln)["split"] for ln in (tmp_path / "whole" / "metrics.jsonl")
            .read_text().splitlines()]
  assert splits.count("dev-news") == splits.count("dev") == 6  # at every dev evaluation
  assert "| dev-news |" in (tmp_path / "whole" / "report.md").read_text()
  final_test = [json.loads(ln) for ln in (tmp_path / "whole" / "metrics.jsonl").read_text()
                .splitlines() if '"test"' in ln][-1]  # TER (issue 30) against sacrebleu's
  hyps = (tmp_path / "whole" / "predictions_test.txt").read_text().splitlines()
  np.testing.assert_allclose(final_test["ter"],
                             sacrebleu.corpus_ter(hyps, [[t for _, t in test]]).score)
  (tmp_path / "test_sources.txt").write_text("".join(f"{s}\n" for s, _ in test))
  served = subprocess.run([sys.executable, "-m", "seq2seq_jax.translate",
                           f"--workdir={tmp_path / 'whole'}", "--checkpoint=60", "--beam_size=1",
                           f"--input={tmp_path / 'test_sources.txt'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert served.returncode == 0, served.stderr
  assert served.stdout == (tmp_path / "whole" / "predictions_test.txt").read_text()
