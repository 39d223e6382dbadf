"""The losses against formulas written out and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.tokens import PAD_ID
from seq2seq_jax.training import losses


def test_label_smoothing_matches_formula():
  logits = np.random.default_rng(0).standard_normal((2, 3, 5))
  targets = np.array([[1, 4, 0], [2, 0, 0]])
  eps = 0.2
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = 0.0
  for b, t in zip(*np.nonzero(targets != PAD_ID)):
    q = np.full(5, eps / 5)
    q[targets[b, t]] += 1 - eps
    expected -= (q * log_p[b, t]).sum()
  out = losses.masked_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(targets), eps)
  np.testing.assert_allclose(out["loss_sum"], expected, rtol=1e-5)
  assert out["num_tokens"] == 3
  correct = sum(np.argmax(logits[b, t]) == targets[b, t]
                for b, t in zip(*np.nonzero(targets != PAD_ID)))
  assert out["num_correct"] == correct


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_projected_cross_entropy_value_and_gradient(label_smoothing):
  """The fused projection + loss: its value against numpy, its hand-written
  gradient against finite differences in float64."""
  rng = np.random.default_rng(0)
  n, hidden, vocab = 7, 4, 11
  with jax.enable_x64(True):
    h = jnp.asarray(rng.standard_normal((n, hidden)))
    w = jnp.asarray(rng.standard_normal((hidden, vocab)))
    b = jnp.asarray(rng.standard_normal(vocab))
    targets = jnp.asarray(rng.integers(0, vocab, n))
    weights = jnp.asarray(rng.uniform(0.5, 1.5, n))

    logits = np.asarray(h) @ np.asarray(w) + np.asarray(b)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    q = np.full((n, vocab), label_smoothing / vocab)
    q[np.arange(n), np.asarray(targets)] += 1 - label_smoothing
    loss, correct = losses.projected_cross_entropy(h, w, b, targets, label_smoothing)
    np.testing.assert_allclose(loss, -(q * log_p).sum(-1), rtol=1e-10)
    np.testing.assert_array_equal(correct, logits.argmax(-1) == np.asarray(targets))

    def total(h, w, b):
      return jnp.sum(losses.projected_cross_entropy(h, w, b, targets, label_smoothing)[0]
                     * weights)

    grads = jax.grad(total, argnums=(0, 1, 2))(h, w, b)
    args = [h, w, b]
    for i, grad in enumerate(grads):
      direction = jnp.asarray(rng.standard_normal(args[i].shape))
      plus = [a + 1e-6 * direction if j == i else a for j, a in enumerate(args)]
      minus = [a - 1e-6 * direction if j == i else a for j, a in enumerate(args)]
      numeric = (total(*plus) - total(*minus)) / 2e-6
      np.testing.assert_allclose(jnp.sum(grad * direction), numeric, rtol=1e-6)
