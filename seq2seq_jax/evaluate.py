"""Evaluation: teacher-forced loss, free-running decoding, BLEU and chrF.

Decoding (`seq2seq_jax.decoding`: greedy when `eval.beam_size` is 1, else beam
search) never sees the gold prefix. BLEU and chrF are sacrebleu's, on
detokenized text.
"""

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu

from seq2seq_jax import decoding
from seq2seq_jax.tokens import PAD_ID
from seq2seq_jax.training import parallel, stack

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
  return stack.map_members(lambda p: decoding.decode(model, p, src, options), (params,), width)


@functools.partial(jax.jit, static_argnames=("model", "width"))
def _forced_members(model, params, src, tgt, width):
  return stack.map_members(lambda p: decoding.forced_log_probs(model, p, src, tgt)[0],
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
                  options: decoding.DecodeOptions, stacked: bool = False,
                  mesh=None) -> decoding.Hypotheses:
  """Greedy or beam search (as `options` say) over `src [N, src_len]` in batches.

  With `stacked`, `params` has a leading member axis and so has every output.
  With a `mesh`, each batch is split over its `data` axis (`params` placed on it).

  Returns numpy `Hypotheses` over all N sentences.
  """
  batch_size = _batch_size(batch_size, len(src), mesh)
  parts = []
  for chunk, real in batches([src], batch_size):
    (chunk,) = _on_mesh(chunk, mesh)
    if stacked:
      out = _decode_members(model, params, chunk, options, _vmap_width(mesh))
      parts.append(jax.tree.map(lambda x, r=real: x[:, :r], parallel.to_host(out)))
    else:
      out = decoding.decode(model, params, chunk, options)
      parts.append(jax.tree.map(lambda x, r=real: x[:r], parallel.to_host(out)))
  return jax.tree.map(lambda *xs: np.concatenate(xs, axis=1 if stacked else 0), *parts)


def _vmap_width(mesh):
  """Members spread over a mesh are vmapped; `lax.map` would visit them one by one."""
  if mesh is not None and mesh.shape["members"] > 1:
    return None
  return stack.default_vmap_width()


def forced_loss(model, params, src, tgt, batch_size, stacked: bool = False, mesh=None):
  """Mean teacher-forced token loss over `(src, tgt)` (`[members]` with `stacked`)."""
  batch_size = _batch_size(batch_size, len(src), mesh)
  total, count = 0.0, 0.0
  for (s, t), real in batches([src, tgt], batch_size):
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


def _text_metrics(hyps, refs, char_level: bool) -> tuple[dict, object, object]:
  # Character-level targets (German number words are one word) get character BLEU.
  bleu = sacrebleu.BLEU(tokenize="char" if char_level else "13a")
  chrf = sacrebleu.CHRF()
  metrics = {"bleu": bleu.corpus_score(hyps, [refs]).score,
             "chrf": chrf.corpus_score(hyps, [refs]).score,
             "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs)]))}
  return metrics, bleu, chrf


def evaluate(model, params, dataset, split: str, cfg_eval, mesh=None) -> dict:
  """Loss, perplexity, BLEU / chrF / exact match of one split.

  The outputs come from beam search with `cfg_eval.beam_size` (greedy when
  1); with `cfg_eval.report_greedy` and a beam, the greedy outputs' scores are
  reported too, as `greedy_bleu`, `greedy_chrf`, `greedy_exact_match`.

  Returns:
    dict with `metrics` (JSON-ready numbers), `bleu_by_length`,
    `exact_match_by_length`, `signature`,
    `hypotheses`, `attention` and the source / output tokens of each sentence.
    With a `mesh`, every batch is split over its data axis.
  """
  return _evaluate(model, params, dataset, split, cfg_eval, members=None, mesh=mesh)[0]


def evaluate_members(model, stacked_params, members: int, dataset, split: str,
                     cfg_eval, mesh=None) -> list[dict]:
  """`evaluate` of each of the `members` runs stacked in `stacked_params` (a
  leading member axis): their loss and decoding run as one vmapped program."""
  return _evaluate(model, stacked_params, dataset, split, cfg_eval, members=members, mesh=mesh)


def _evaluate(model, params, dataset, split, cfg_eval, members, mesh) -> list[dict]:
  src, tgt = dataset.arrays[split]
  texts = dataset.texts[split]
  if cfg_eval.max_examples:
    src, tgt, texts = src[:cfg_eval.max_examples], tgt[:cfg_eval.max_examples], \
        texts[:cfg_eval.max_examples]
  stacked = members is not None
  loss = forced_loss(model, params, src, tgt, cfg_eval.batch_size, stacked, mesh)
  refs = [t for _, t in texts]
  char_level = dataset.tgt_vocab.kind == "char"
  options = decoding.DecodeOptions.from_eval_config(cfg_eval)
  out = decode_corpus(model, params, src, cfg_eval.batch_size, options, stacked, mesh)
  greedy = None
  if options.beam_size > 1 and cfg_eval.get("report_greedy", False):
    greedy = decode_corpus(model, params, src, cfg_eval.batch_size,
                           dataclasses.replace(options, beam_size=1), stacked, mesh)
  src_lengths = [int(np.sum(row != PAD_ID)) for row in src]
  results = []
  for m in range(members or 1):
    pick = (lambda x, m=m: x[m]) if stacked else (lambda x: x)
    ids = pick(out.tokens)[:, 0]
    hyps = [dataset.tgt_vocab.decode(row) for row in ids]
    text_metrics, bleu, chrf = _text_metrics(hyps, refs, char_level)
    member_loss = float(pick(loss))
    metrics = {"loss": member_loss, "ppl": math.exp(min(member_loss, 50.0)), **text_metrics}
    if greedy is not None:
      greedy_hyps = [dataset.tgt_vocab.decode(row) for row in pick(greedy.tokens)[:, 0]]
      greedy_metrics, _, _ = _text_metrics(greedy_hyps, refs, char_level)
      metrics.update({f"greedy_{k}": v for k, v in greedy_metrics.items()})
    results.append({
        "metrics": metrics,
        "bleu_by_length": bleu_by_length(hyps, refs, src_lengths, bleu.tokenizer.signature()),
        "exact_match_by_length": exact_match_by_length(hyps, refs, src_lengths),
        "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
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


# Plots of any corpus' tokens: DejaVu Sans (Latin, Greek, Cyrillic, Arabic, Hebrew),
# then a CJK font (Debian's fonts-noto-cjk, which `make setup` installs, or the
# system's own on macOS / Windows); matplotlib takes each glyph from the first
# font of the list that has it.
PLOT_FONTS = ("DejaVu Sans", "Noto Sans CJK JP", "Source Han Sans", "Apple SD Gothic Neo",
              "Hiragino Sans", "PingFang SC", "Malgun Gothic", "Microsoft YaHei")
FONT_FILES = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
              "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc")


def _pyplot(texts=()):
  # Imported here: pyplot adds 0.5 s to every start-up (measured; translate and
  # the sweep driver import this module), and the backend must be set first.
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import font_manager
  import matplotlib.pyplot as plt
  # The CJK fonts only for text that needs them (U+2E80 on: loading one costs 0.4 s).
  if not any(ord(c) >= 0x2E80 for text in texts for c in text):
    matplotlib.rcParams["font.family"] = [PLOT_FONTS[0]]
    return plt
  names = {f.name for f in font_manager.fontManager.ttflist}
  if "Noto Sans CJK JP" not in names:  # installed after matplotlib cached its font list
    for path in FONT_FILES:
      if Path(path).exists():
        font_manager.fontManager.addfont(path)
    names = {f.name for f in font_manager.fontManager.ttflist}
  matplotlib.rcParams["font.family"] = [n for n in PLOT_FONTS if n in names] or ["sans-serif"]
  return plt


def plot_attention_heads(heads, src_tokens, out_tokens, path, title=""):
  """One PNG: a grid of `heads [layers, heads, out_len, src_len]`, a row a layer."""
  plt = _pyplot([*src_tokens, *out_tokens, title])
  heads = np.asarray(heads)[:, :, :len(out_tokens), :len(src_tokens)]
  rows, cols = heads.shape[:2]
  cell_w, cell_h = 0.8 + 0.18 * len(src_tokens), 0.8 + 0.14 * len(out_tokens)
  fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_w + 1.0, rows * cell_h + 0.8),
                           squeeze=False)
  for layer in range(rows):
    for head in range(cols):
      ax = axes[layer, head]
      image = ax.imshow(heads[layer, head], cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
      ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=7)
      bottom, left = layer == rows - 1, head == 0
      ax.set_xticks(range(len(src_tokens)), src_tokens if bottom else [], rotation=90,
                    fontsize=5)
      ax.set_yticks(range(len(out_tokens)), out_tokens if left else [], fontsize=5)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout(rect=(0, 0, 0.93, 1))
  fig.colorbar(image, cax=fig.add_axes((0.945, 0.15, 0.015, 0.7)), label="attention weight")
  fig.savefig(path, dpi=90)
  plt.close(fig)


def plot_attention(weights, src_tokens, out_tokens, path, title=""):
  """Heatmap of `weights [out_len, src_len]` with the tokens on the axes."""
  plt = _pyplot([*src_tokens, *out_tokens, title])
  weights = np.asarray(weights)[:len(out_tokens), :len(src_tokens)]
  fig, ax = plt.subplots(figsize=(2.6 + 0.45 * len(src_tokens), 1.0 + 0.3 * len(out_tokens)))
  image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
  fig.colorbar(image, ax=ax, label="attention weight", fraction=0.05, pad=0.02)
  ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right")
  ax.set_yticks(range(len(out_tokens)), out_tokens)
  ax.set_xlabel("source")
  ax.set_ylabel("output")
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
