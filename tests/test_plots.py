"""Attention plots: every script of the corpora users train on is drawn, with a colour bar."""

import warnings

import numpy as np
import pytest

from seq2seq_jax import plots

TOKENS = {"hangul": ["안녕하세요", "세계"], "chinese": ["你好", "世界"], "japanese": ["こんにちは"],
          "cyrillic": ["Привет", "мир"], "greek": ["γειά"], "latin": ["Grüße", "ça"]}


def _missing_glyphs(plot) -> list[str]:
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    plot()
  return [str(w.message) for w in caught if "missing from font" in str(w.message)]


@pytest.mark.parametrize("script", sorted(TOKENS))
def test_every_script_is_drawn_without_a_missing_glyph(script, tmp_path):
  tokens = TOKENS[script]
  weights = np.full((len(tokens) + 1, len(tokens)), 1.0 / len(tokens))
  missing = _missing_glyphs(lambda: plots.plot_attention(
      weights, tokens, tokens + ["<eos>"], tmp_path / "a.png",
      title=f"step 1, model output: {' '.join(tokens)}"))
  assert missing == []
  heads = np.full((2, 2, len(tokens) + 1, len(tokens)), 0.5)
  assert _missing_glyphs(lambda: plots.plot_attention_heads(
      heads, tokens, tokens + ["<eos>"], tmp_path / "h.png", title=" ".join(tokens))) == []
  assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_without_the_fallback_font_hangul_is_missing(tmp_path, monkeypatch):
  """The check above can fail: DejaVu Sans alone has no Hangul."""
  monkeypatch.setattr(plots, "PLOT_FONTS", ("DejaVu Sans",))
  missing = _missing_glyphs(lambda: plots.plot_attention(
      np.ones((1, 1)), ["안녕"], ["<eos>"], tmp_path / "a.png"))
  assert missing and "DejaVu Sans" in missing[0]


def test_the_plot_has_a_colour_bar(tmp_path, monkeypatch):
  plt = plots._pyplot()
  saved = []
  monkeypatch.setattr(plt, "close", lambda fig: saved.append(fig))
  plots.plot_attention(np.eye(2), ["a", "b"], ["x", "<eos>"], tmp_path / "a.png")
  (fig,) = saved
  labels = [ax.get_ylabel() for ax in fig.axes]
  assert labels == ["output", "attention weight"]  # the heatmap and its colour bar
