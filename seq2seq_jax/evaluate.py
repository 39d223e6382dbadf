"""Evaluation: teacher-forced loss, free-running greedy decoding, BLEU and chrF.

Decoding never sees the gold prefix: every step reads the model's own previous
prediction (`tf_prob=0`). BLEU and chrF are sacrebleu's, on detokenized text.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu

from seq2seq_jax import losses
from seq2seq_jax.tokens import PAD_ID

LENGTH_BUCKETS = (5, 10, 15, 20, 30, 40, 60, 10**9)  # upper bounds of source lengths


class _Compiled:
  """The jitted decoding and loss functions of one model."""

  def __init__(self, model):
    def greedy(params, src, dummy_tgt):
      out = model.apply({"params": params}, src, dummy_tgt, tf_prob=0.0,
                        rng=jax.random.PRNGKey(0))
      return jnp.argmax(out["logits"], -1), out["attention"]

    def forced(params, src, tgt):
      out = model.apply({"params": params}, src, tgt)
      ce = losses.masked_cross_entropy(out["logits"], tgt)
      return ce["loss_sum"], ce["num_tokens"]

    self.greedy, self.forced = jax.jit(greedy), jax.jit(forced)


@functools.lru_cache(maxsize=8)
def _compiled(model) -> _Compiled:
  return _Compiled(model)


def _batches(arrays, batch_size):
  """Fixed-shape batches (the last one padded with copies of row 0), and the real size."""
  n = len(arrays[0])
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    real = len(chunk[0])
    if real < batch_size:
      chunk = [np.concatenate([c, np.repeat(a[:1], batch_size - real, 0)]) for c, a in
               zip(chunk, arrays)]
    yield chunk, real


def greedy_decode(model, params, src: np.ndarray, max_len: int, batch_size: int):
  """Free-running greedy decoding of `src [N, src_len]`.

  Returns:
    ids `[N, max_len]` (everything after the first EOS is to be ignored) and
    attention weights `[N, max_len, src_len]` (None without attention).
  """
  batch_size = min(batch_size, len(src))
  dummy = np.zeros((batch_size, max_len), np.int32)
  ids, weights = [], []
  for (chunk,), real in _batches([src], batch_size):
    out_ids, out_w = _compiled(model).greedy(params, chunk, dummy)
    ids.append(np.asarray(out_ids)[:real])
    if out_w is not None:
      weights.append(np.asarray(out_w)[:real])
  return np.concatenate(ids), (np.concatenate(weights) if weights else None)


def forced_loss(model, params, src, tgt, batch_size):
  """Mean teacher-forced token loss over `(src, tgt)`."""
  batch_size = min(batch_size, len(src))
  total, count = 0.0, 0.0
  for (s, t), real in _batches([src, tgt], batch_size):
    t = t.copy()
    t[real:] = PAD_ID  # padding rows contribute nothing
    loss_sum, num = _compiled(model).forced(params, s, t)
    total += float(loss_sum)
    count += float(num)
  return total / max(count, 1.0)


def bleu_by_length(hyps, refs, src_lengths, tokenize="13a"):
  """Corpus BLEU of the sentences in each source-length bucket."""
  rows, low = [], 1
  for high in LENGTH_BUCKETS:
    idx = [i for i, n in enumerate(src_lengths) if low <= n <= high]
    if idx:
      bleu = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[refs[i] for i in idx]],
                                   tokenize=tokenize)
      label = f"{low}-{high}" if high < 10**9 else f"{low}+"
      rows.append({"bucket": label, "n": len(idx), "bleu": round(bleu.score, 2)})
    low = high + 1
  return rows


def evaluate(model, params, dataset, split: str, cfg_eval) -> dict:
  """Loss, perplexity, greedy BLEU / chrF / exact match of one split.

  Returns:
    dict with `metrics` (JSON-ready numbers), `bleu_by_length`, `signature`,
    `hypotheses`, `attention` and the source / output tokens of each sentence.
  """
  src, tgt = dataset.arrays[split]
  texts = dataset.texts[split]
  if cfg_eval.max_examples:
    src, tgt, texts = src[:cfg_eval.max_examples], tgt[:cfg_eval.max_examples], \
        texts[:cfg_eval.max_examples]
  loss = forced_loss(model, params, src, tgt, cfg_eval.batch_size)
  ids, weights = greedy_decode(model, params, src, tgt.shape[1], cfg_eval.batch_size)
  hyps = [dataset.tgt_vocab.decode(row) for row in ids]
  refs = [t for _, t in texts]
  # Character-level targets (German number words are one word) get character BLEU.
  bleu = sacrebleu.BLEU(tokenize="char" if dataset.tgt_vocab.kind == "char" else "13a")
  chrf = sacrebleu.CHRF()
  bleu_score = bleu.corpus_score(hyps, [refs])
  chrf_score = chrf.corpus_score(hyps, [refs])
  src_lengths = [int(np.sum(row != PAD_ID)) for row in src]
  metrics = {
      "loss": loss,
      "ppl": math.exp(min(loss, 50.0)),
      "bleu": bleu_score.score,
      "chrf": chrf_score.score,
      "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs)])),
  }
  return {
      "metrics": metrics,
      "bleu_by_length": bleu_by_length(hyps, refs, src_lengths, bleu.tokenizer.signature()),
      "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
      "hypotheses": hyps,
      "output_ids": ids,
      "attention": weights,
  }


def plot_attention(weights, src_tokens, out_tokens, path, title=""):
  """Heatmap of `weights [out_len, src_len]` with the tokens on the axes."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  weights = np.asarray(weights)[:len(out_tokens), :len(src_tokens)]
  fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(src_tokens), 1.0 + 0.3 * len(out_tokens)))
  ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
  ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right")
  ax.set_yticks(range(len(out_tokens)), out_tokens)
  ax.set_xlabel("source")
  ax.set_ylabel("output")
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
