"""Attention plots: one heatmap of an output against its source, a grid of every
layer's and head's, and the one rule for an output's tokens on an axis."""

from pathlib import Path

import numpy as np

from seq2seq_jax.tokens import EOS_ID


def output_tokens(tgt_vocab, ids) -> list[str]:
  """The tokens of an output row `ids` for a plot's axis: up to its first `<eos>`,
  which is shown when the output has one (an output cut at the length limit has
  none), padding dropped."""
  ids = np.asarray(ids)
  return tgt_vocab.tokens(ids) + (["<eos>"] if np.any(ids == EOS_ID) else [])


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
