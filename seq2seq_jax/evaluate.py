"""Evaluation: teacher-forced loss, free-running decoding, BLEU and chrF.

Decoding (`seq2seq_jax.decoding`: greedy when `eval.beam_size` is 1, else beam
search) never sees the gold prefix. BLEU and chrF are sacrebleu's, on
detokenized text.
"""

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu

from seq2seq_jax import decoding, parallel
from seq2seq_jax.tokens import PAD_ID

LENGTH_BUCKETS = (5, 10, 15, 20, 30, 40, 60, 10**9)  # upper bounds of source lengths


def batches(arrays, batch_size: int):
  """Fixed-shape batches of numpy arrays (the last one padded with copies of
  row 0, so one compiled shape serves all), and how many rows are real."""
  n = len(arrays[0])
  for start in range(0, n, batch_size):
    chunk = [a[start:start + batch_size] for a in arrays]
    real = len(chunk[0])
    if real < batch_size:
      chunk = [np.concatenate([c, np.repeat(a[:1], batch_size - real, 0)])
               for c, a in zip(chunk, arrays)]
    yield chunk, real


@functools.partial(jax.jit, static_argnames=("model", "options", "width"))
def _decode_members(model, params, src, options, width):
  """`decoding.decode` of every member of stacked `params` (leading axis), one program."""
  return parallel.map_members(lambda p: decoding.decode(model, p, src, options), (params,), width)


@functools.partial(jax.jit, static_argnames=("model", "width"))
def _forced_members(model, params, src, tgt, width):
  return parallel.map_members(lambda p: decoding.forced_log_probs(model, p, src, tgt)[0],
                           (params,), width)


def _batch_size(batch_size: int, n: int, mesh) -> int:
  """At most `batch_size` (and the corpus), rounded up to split over the mesh (the
  padding rows are dropped)."""
  size = max(1, min(batch_size, n))
  if mesh is None:
    return size
  return -(-size // parallel.rows_multiple(mesh)) * parallel.rows_multiple(mesh)


def _on_mesh(arrays, mesh):
  """Numpy batches as global arrays split over the mesh's data axis (the source is
  the stacked members' common input); unchanged without a mesh."""
  if mesh is None:
    return [jnp.asarray(a) for a in arrays]
  return parallel.shard_rows(arrays, mesh)


def decode_corpus(model, params, src: np.ndarray, batch_size: int,
                  options: decoding.DecodeOptions, stacked: bool = False, mesh=None,
                  by_length: bool = False, seed: int = 0,
                  between_batches: Callable[[], None] | None = None) -> decoding.Hypotheses:
  """Greedy, beam search or sampling (as `options` say) over `src [N, src_len]`
  in batches: the one corpus decoder of evaluation and `translate`.

  Evaluation's batches (the default) follow the corpus order at its width, the
  last padded with copies of row 0, so that one compiled shape serves them all.
  With `by_length` (translate's), sentences are batched longest first and each
  batch is cut to its longest sentence, rounded up to a multiple of 8 tokens (few
  shapes to compile, little padding). Sampling draws batch j's numbers from
  `fold_in(PRNGKey(seed), j)`. With `stacked`, `params` has a leading member axis
  and so has every output. With a `mesh`, each batch is split over its `data`
  axis (`params` placed on it). `between_batches` is called before each batch (the
  training loop's stop signals: it raises to stop).

  Returns numpy `Hypotheses` over all N sentences, in corpus order (a batch's
  outputs padded to the longest: `<pad>` tokens, zero attention).
  """
  if by_length:
    lengths = np.sum(src != PAD_ID, axis=1)
    order = np.argsort(-lengths, kind="stable")
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    chunks = [(src[g, :-(-max(1, lengths[g].max()) // 8) * 8], len(g)) for g in groups]
  else:
    order = np.arange(len(src))
    chunks = [(chunk, real) for (chunk,), real in
              batches([src], _batch_size(batch_size, len(src), mesh))]
  parts = []
  for number, (chunk, real) in enumerate(chunks):
    if between_batches is not None:
      between_batches()
    (chunk,) = _on_mesh([chunk], mesh)
    if stacked:
      out = _decode_members(model, params, chunk, options, _vmap_width(mesh))
      parts.append(jax.tree.map(lambda x, r=real: x[:, :r], parallel.to_host(out)))
    else:
      out = decoding.decode(model, params, chunk, options,
                            rng=jax.random.fold_in(jax.random.PRNGKey(seed), number))
      parts.append(jax.tree.map(lambda x, r=real: x[:r], parallel.to_host(out)))
  rows = 1 if stacked else 0
  joined = jax.tree.map(lambda *xs: np.concatenate(_padded(xs, rows), axis=rows), *parts)
  if not by_length:
    return joined
  back = np.argsort(order)  # row i of the corpus is row back[i] of the sorted outputs
  return jax.tree.map(lambda x: np.take(x, back, axis=rows), joined)


def _padded(arrays, rows: int) -> list:
  """Batch outputs padded to the widest in every axis after `rows` and the
  hypotheses' (the tokens with `<pad>`, the attention with zeros)."""
  shape = np.max([a.shape for a in arrays], axis=0)
  out = []
  for a in arrays:
    pad = [(0, 0)] * (rows + 2) + [(0, int(n - m)) for n, m in zip(shape[rows + 2:],
                                                                   a.shape[rows + 2:])]
    out.append(np.pad(a, pad, constant_values=PAD_ID if a.dtype.kind == "i" else 0)
               if any(p for _, p in pad) else a)
  return out


def _vmap_width(mesh):
  """Members spread over a mesh are vmapped; `lax.map` would visit them one by one."""
  if mesh is not None and mesh.shape["members"] > 1:
    return None
  return parallel.default_vmap_width()


def forced_loss(model, params, src, tgt, batch_size, stacked: bool = False, mesh=None,
                between_batches: Callable[[], None] | None = None):
  """Mean teacher-forced token loss over `(src, tgt)` (`[members]` with `stacked`)."""
  batch_size = _batch_size(batch_size, len(src), mesh)
  total, count = 0.0, 0.0
  for (s, t), real in batches([src, tgt], batch_size):
    if between_batches is not None:
      between_batches()
    t = t.copy()
    t[real:] = PAD_ID  # padding rows contribute nothing
    count += float(np.sum(t != PAD_ID))
    s, t = _on_mesh([s, t], mesh)
    if stacked:
      per_token = _forced_members(model, params, s, t, _vmap_width(mesh))
      total = total - np.asarray(parallel.to_host(jnp.sum(per_token, axis=(1, 2))), np.float64)
    else:
      per_token, _ = decoding.forced_log_probs(model, params, s, t)
      total -= float(parallel.to_host(jnp.sum(per_token)))
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


def exact_match_by_length(hyps, refs, src_lengths):
  """The fraction of outputs equal to their reference for each source length up
  to 10 tokens, then in the buckets of `LENGTH_BUCKETS` (a short sentence the
  model gets wrong is invisible in a corpus mean: issue 17's "seven")."""
  bounds = [n for n in range(1, 11)] + [b for b in LENGTH_BUCKETS if b > 10]
  rows, low = [], 1
  for high in bounds:
    idx = [i for i, n in enumerate(src_lengths) if low <= n <= high]
    if idx:
      label = str(low) if low == high else f"{low}-{high}" if high < 10**9 else f"{low}+"
      rows.append({"bucket": label, "n": len(idx),
                   "exact_match": round(float(np.mean([hyps[i] == refs[i] for i in idx])), 4)})
    low = high + 1
  return rows


def _text_metrics(hyps, refs, char_level: bool) -> tuple[dict, object, object, object]:
  # Character-level targets (German number words are one word) get character BLEU.
  # TER (Snover et al. 2006, sacrebleu's defaults) counts edits of words either way.
  bleu = sacrebleu.BLEU(tokenize="char" if char_level else "13a")
  chrf, ter = sacrebleu.CHRF(), sacrebleu.TER()
  metrics = {"bleu": bleu.corpus_score(hyps, [refs]).score,
             "chrf": chrf.corpus_score(hyps, [refs]).score,
             "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs)])),
             "ter": ter.corpus_score(hyps, [refs]).score}
  return metrics, bleu, chrf, ter


def evaluate(model, params, dataset, split: str, cfg_eval, mesh=None,
             between_batches: Callable[[], None] | None = None) -> dict:
  """Loss, perplexity, BLEU / chrF / exact match of one split.

  The outputs come from beam search with `cfg_eval.beam_size` (greedy when
  1); with `cfg_eval.report_greedy` and a beam, the greedy outputs' scores are
  reported too, as `greedy_bleu`, `greedy_chrf`, `greedy_exact_match`.

  Returns:
    dict with `metrics` (JSON-ready numbers), `bleu_by_length`,
    `exact_match_by_length`, `signature`,
    `hypotheses`, `attention` and the source / output tokens of each sentence.
    With a `mesh`, every batch is split over its data axis. `between_batches`: see
    `decode_corpus`.
  """
  return _evaluate(model, params, dataset, split, cfg_eval, None, mesh, between_batches)[0]


def evaluate_members(model, stacked_params, members: int, dataset, split: str,
                     cfg_eval, mesh=None,
                     between_batches: Callable[[], None] | None = None) -> list[dict]:
  """`evaluate` of each of the `members` runs stacked in `stacked_params` (a
  leading member axis): their loss and decoding run as one vmapped program."""
  return _evaluate(model, stacked_params, dataset, split, cfg_eval, members, mesh,
                   between_batches)


def _evaluate(model, params, dataset, split, cfg_eval, members, mesh,
              between_batches) -> list[dict]:
  src, tgt = dataset.arrays[split]
  texts = dataset.texts[split]
  if cfg_eval.max_examples:
    src, tgt, texts = src[:cfg_eval.max_examples], tgt[:cfg_eval.max_examples], \
        texts[:cfg_eval.max_examples]
  stacked = members is not None
  loss = forced_loss(model, params, src, tgt, cfg_eval.batch_size, stacked, mesh,
                     between_batches)
  refs = [t for _, t in texts]
  char_level = dataset.tgt_vocab.kind == "char"
  options = decoding.DecodeOptions.from_eval_config(cfg_eval)
  out = decode_corpus(model, params, src, cfg_eval.batch_size, options, stacked, mesh,
                      between_batches=between_batches)
  greedy = None
  if options.beam_size > 1 and cfg_eval.report_greedy:
    greedy = decode_corpus(model, params, src, cfg_eval.batch_size,
                           dataclasses.replace(options, beam_size=1), stacked, mesh,
                           between_batches=between_batches)
  src_lengths = [int(np.sum(row != PAD_ID)) for row in src]
  results = []
  for m in range(members or 1):
    pick = (lambda x, m=m: x[m]) if stacked else (lambda x: x)
    ids = pick(out.tokens)[:, 0]
    hyps = [dataset.tgt_vocab.decode(row) for row in ids]
    text_metrics, bleu, chrf, ter = _text_metrics(hyps, refs, char_level)
    member_loss = float(pick(loss))
    metrics = {"loss": member_loss, "ppl": math.exp(min(member_loss, 50.0)), **text_metrics}
    if greedy is not None:
      greedy_hyps = [dataset.tgt_vocab.decode(row) for row in pick(greedy.tokens)[:, 0]]
      greedy_metrics = _text_metrics(greedy_hyps, refs, char_level)[0]
      metrics.update({f"greedy_{k}": v for k, v in greedy_metrics.items()})
    results.append({
        "metrics": metrics,
        "bleu_by_length": bleu_by_length(hyps, refs, src_lengths, bleu.tokenizer.signature()),
        "exact_match_by_length": exact_match_by_length(hyps, refs, src_lengths),
        "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature()),
                      "ter": str(ter.get_signature())},
        "hypotheses": hyps,
        "output_ids": ids,
        "attention": None if out.attention is None else pick(out.attention)[:, 0],
    })
  return results


def attention_heads(model, params, src_ids: np.ndarray, out_ids: np.ndarray):
  """Every layer's and head's cross-attention while the model reads its own output.

  Args:
    src_ids: `[src_len]` one source sentence.
    out_ids: `[out_len]` its output, `<eos>` included.

  Returns:
    `[layers, heads, out_len, src_len]`, or None for a model without heads. The
    weights equal those of decoding that output (the decoder sees the same prefix).
  """
  def heads(src, tgt):
    return model.apply({"params": params}, src, tgt).heads

  src, tgt = jnp.asarray(src_ids[None]), jnp.asarray(out_ids[None])
  if jax.eval_shape(heads, src, tgt) is None:  # traced only: 0.1 s, not a 4 s RNN forward
    return None
  return np.asarray(heads(src, tgt)[0])
