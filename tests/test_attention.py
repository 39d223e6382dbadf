"""Attention scores against the papers' formulas written out in numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.models.rnn import attention as attn

BATCH, SRC_LEN, DIM, ATT_DIM = 3, 6, 5, 4
LENGTHS = np.array([6, 3, 1])


def _np_scores(name, p, memory, query):
  """Unnormalised scores `[batch, src_len]`, one source position at a time."""
  scores = np.zeros((BATCH, SRC_LEN))
  for b in range(BATCH):
    for s in range(SRC_LEN):
      m, q = memory[b, s], query[b]
      if name == "dot":
        scores[b, s] = q @ m
      elif name == "scaled_dot":
        scores[b, s] = q @ m / math.sqrt(DIM)
      elif name == "general":
        scores[b, s] = q @ (m @ p["w_a"])
      elif name == "concat":  # v . tanh(W_a [m; q])
        w_a = np.concatenate([p["w_memory"], p["w_query"]], 0)
        scores[b, s] = p["v"] @ np.tanh(np.concatenate([m, q]) @ w_a)
      elif name == "additive":  # v . tanh(W_1 m + W_2 q + b)
        scores[b, s] = p["v"] @ np.tanh(m @ p["w_memory"] + q @ p["w_query"] + p["b"])
  return scores


@pytest.mark.parametrize("name", [a for a in attn.ATTENTION_TYPES if a != "none"])
def test_weights_and_context_match_formula(name):
  rng = np.random.default_rng(0)
  params = attn.init(name, jax.random.PRNGKey(0), DIM, DIM, ATT_DIM)
  if "b" in params:
    params["b"] = jnp.asarray(rng.standard_normal(ATT_DIM), jnp.float32)
  memory = rng.standard_normal((BATCH, SRC_LEN, DIM)).astype(np.float32)
  query = rng.standard_normal((BATCH, DIM)).astype(np.float32)
  mask = np.arange(SRC_LEN)[None] < LENGTHS[:, None]

  keys = attn.prepare_keys(name, params, jnp.asarray(memory))
  context, weights = attn.attend(name, params, keys, jnp.asarray(memory),
                                 jnp.asarray(mask), jnp.asarray(query))

  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  scores = _np_scores(name, p, memory.astype(np.float64), query.astype(np.float64))
  expected = np.zeros_like(scores)
  for b in range(BATCH):
    e = np.exp(scores[b, :LENGTHS[b]] - scores[b, :LENGTHS[b]].max())
    expected[b, :LENGTHS[b]] = e / e.sum()
  np.testing.assert_allclose(weights, expected, atol=1e-6)
  np.testing.assert_allclose(np.sum(weights, -1), 1.0, atol=1e-6)
  assert np.all(np.asarray(weights)[~mask] == 0.0)  # exactly zero on padding
  np.testing.assert_allclose(context, np.einsum("bs,bsd->bd", expected, memory), atol=1e-5)


def test_padding_values_do_not_leak():
  """Changing what sits in padded positions changes neither weights nor context."""
  params = attn.init("general", jax.random.PRNGKey(0), DIM, DIM, ATT_DIM)
  rng = np.random.default_rng(1)
  memory = rng.standard_normal((BATCH, SRC_LEN, DIM)).astype(np.float32)
  mask = np.arange(SRC_LEN)[None] < LENGTHS[:, None]
  garbage = np.where(mask[..., None], memory, 1e4).astype(np.float32)
  query = jnp.asarray(rng.standard_normal((BATCH, DIM)), jnp.float32)
  outs = [attn.attend("general", params, attn.prepare_keys("general", params, jnp.asarray(m)),
                      jnp.asarray(m), jnp.asarray(mask), query) for m in (memory, garbage)]
  np.testing.assert_array_equal(outs[0][1], outs[1][1])
  np.testing.assert_array_equal(outs[0][0], outs[1][0])


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"unknown attention 'luong'.*dot, general, concat"):
    attn.init("luong", jax.random.PRNGKey(0), DIM, DIM, ATT_DIM)
  with pytest.raises(ValueError, match=r"memory_dim == query_dim, got 6 and 5"):
    attn.init("dot", jax.random.PRNGKey(0), 6, 5, ATT_DIM)
