"""Cells against PyTorch, a hand-written formula and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seq2seq_jax import cells

BATCH, STEPS, IN_DIM, HIDDEN = 3, 20, 5, 7
TORCH_MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def _random_params(name, key):
  """The cell's init with non-zero biases, so that every term is exercised."""
  params = cells.CELLS[name].init(key, IN_DIM, HIDDEN)
  k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
  params["b_ih"] = params["b_ih"] + 0.3 * jax.random.normal(k1, params["b_ih"].shape)
  params["b_hh"] = 0.3 * jax.random.normal(k2, params["b_hh"].shape)
  return params


def _torch_cell(name, params):
  module = TORCH_MODULES[name](IN_DIM, HIDDEN).double()
  with torch.no_grad():
    module.weight_ih_l0.copy_(torch.from_numpy(np.asarray(params["w_ih"]).T))
    module.weight_hh_l0.copy_(torch.from_numpy(np.asarray(params["w_hh"]).T))
    module.bias_ih_l0.copy_(torch.from_numpy(np.asarray(params["b_ih"])))
    module.bias_hh_l0.copy_(torch.from_numpy(np.asarray(params["b_hh"])))
  return module


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_matches_torch_over_20_steps(name):
  cell = cells.CELLS[name]
  params = _random_params(name, jax.random.PRNGKey(0))
  xs = np.random.default_rng(1).standard_normal((STEPS, BATCH, IN_DIM)).astype(np.float32)
  h0 = np.random.default_rng(2).standard_normal((BATCH, HIDDEN)).astype(np.float32) * 0.5
  c0 = np.random.default_rng(3).standard_normal((BATCH, HIDDEN)).astype(np.float32) * 0.5
  carry0 = cell.initial_carry(BATCH, HIDDEN)._replace(h=jnp.asarray(h0))
  if name == "lstm":
    carry0 = carry0._replace(c=jnp.asarray(c0))

  final, hs = cells.scan_cell(cell, params, carry0, jnp.asarray(xs))

  # The same steps one at a time through `step`.
  carry, step_hs = carry0, []
  for t in range(STEPS):
    carry, h = cell.step(params, carry, jnp.asarray(xs[t]))
    step_hs.append(h)

  module = _torch_cell(name, params)
  state = torch.from_numpy(h0).double()[None]
  if name == "lstm":
    state = (state, torch.from_numpy(c0).double()[None])
  with torch.no_grad():
    ref_hs, ref_state = module(torch.from_numpy(xs).double(), state)
  ref_h = ref_state[0] if name == "lstm" else ref_state
  np.testing.assert_allclose(hs, ref_hs.numpy(), atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.stack(step_hs), ref_hs.numpy(), atol=1e-5, rtol=0)
  np.testing.assert_allclose(final.h, ref_h[0].numpy(), atol=1e-5, rtol=0)
  if name == "lstm":
    np.testing.assert_allclose(final.c, ref_state[1][0].numpy(), atol=1e-5, rtol=0)


def _np_layer_norm(x, scale, bias, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_ln_lstm_matches_formula():
  """Ba et al. 2016, eq. 20-22, written out in numpy."""
  cell = cells.CELLS["ln_lstm"]
  rng = np.random.default_rng(0)
  params = cell.init(jax.random.PRNGKey(0), IN_DIM, HIDDEN)
  params = {k: v + 0.2 * rng.standard_normal(v.shape).astype(np.float32)
            for k, v in params.items()}
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  xs = rng.standard_normal((STEPS, BATCH, IN_DIM)).astype(np.float32)
  _, hs = cells.scan_cell(cell, params, cell.initial_carry(BATCH, HIDDEN), jnp.asarray(xs))

  sig = lambda v: 1 / (1 + np.exp(-v))
  h = np.zeros((BATCH, HIDDEN))
  c = np.zeros((BATCH, HIDDEN))
  for t in range(STEPS):
    gates = (_np_layer_norm(xs[t] @ p["w_ih"], p["ln_ih_scale"], p["ln_ih_bias"])
             + _np_layer_norm(h @ p["w_hh"], p["ln_hh_scale"], p["ln_hh_bias"]) + p["b"])
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(g)
    h = sig(o) * np.tanh(_np_layer_norm(c, p["ln_c_scale"], p["ln_c_bias"]))
    np.testing.assert_allclose(hs[t], h, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(cells.CELLS))
def test_gradients_match_finite_differences(name):
  cell = cells.CELLS[name]
  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                          cell.init(jax.random.PRNGKey(0), IN_DIM, HIDDEN))
    xs = jnp.asarray(np.random.default_rng(1).standard_normal((6, BATCH, IN_DIM)))
    mask = jnp.asarray(np.arange(6)[:, None] < np.array([6, 4, 2])[None])
    target = jnp.asarray(np.random.default_rng(2).standard_normal((6, BATCH, HIDDEN)))

    def loss(params):
      final, hs = cells.scan_cell(cell, params, cell.initial_carry(BATCH, HIDDEN, jnp.float64),
                                  xs, mask)
      return jnp.sum((hs - target) ** 2 * mask[..., None]) + jnp.sum(final.h ** 3)

    grads = jax.grad(loss)(params)
    rng = np.random.default_rng(3)
    for key in params:
      direction = jnp.asarray(rng.standard_normal(params[key].shape))
      eps = 1e-6
      plus = {**params, key: params[key] + eps * direction}
      minus = {**params, key: params[key] - eps * direction}
      numeric = (loss(plus) - loss(minus)) / (2 * eps)
      analytic = jnp.sum(grads[key] * direction)
      np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=key)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_init_scheme(name):
  cell = cells.CELLS[name]
  params = cell.init(jax.random.PRNGKey(0), 64, 32)
  w_hh = np.asarray(params["w_hh"])
  for g in range(cell.num_gates):  # each recurrent gate block is orthogonal
    block = w_hh[:, g * 32:(g + 1) * 32]
    np.testing.assert_allclose(block.T @ block, np.eye(32), atol=1e-5)
  limit = np.sqrt(6.0 / (64 + 32))  # Glorot uniform per gate block
  assert np.abs(params["w_ih"]).max() <= limit
  assert np.abs(params["w_ih"]).max() > 0.9 * limit
  expected_bias = np.zeros(cell.num_gates * 32)
  if name == "lstm":
    expected_bias[32:64] = 1.0  # forget gate
  np.testing.assert_array_equal(params["b_ih"] + params["b_hh"], expected_bias)


def test_padding_leaves_final_state_unchanged():
  """A masked step keeps the carry: extra padding does not change a sentence."""
  cell = cells.CELLS["lstm"]
  params = cell.init(jax.random.PRNGKey(0), IN_DIM, HIDDEN)
  xs = jnp.asarray(np.random.default_rng(0).standard_normal((4, 1, IN_DIM)), jnp.float32)
  padded = jnp.concatenate([xs, 100.0 * jnp.ones((3, 1, IN_DIM))], 0)
  mask = jnp.asarray(np.arange(7)[:, None] < 4)
  carry0 = cell.initial_carry(1, HIDDEN)
  final, _ = cells.scan_cell(cell, params, carry0, xs)
  final_padded, _ = cells.scan_cell(cell, params, carry0, padded, mask)
  # Equal up to rounding: the input projection's matmul has another shape.
  np.testing.assert_allclose(final.h, final_padded.h, atol=1e-6)
  np.testing.assert_allclose(final.c, final_padded.c, atol=1e-6)
  # Reversed: the backward direction starts at the last real token.
  rev, _ = cells.scan_cell(cell, params, carry0, xs[::-1])
  rev_padded, _ = cells.scan_cell(cell, params, carry0, padded, mask, reverse=True)
  np.testing.assert_allclose(rev.h, rev_padded.h, atol=1e-6)


def test_bad_arguments_name_the_value():
  with pytest.raises(ValueError, match=r"unknown cell 'lstmm'.*gru.*ln_lstm.*lstm.*rnn"):
    cells.get_cell("lstmm")
  with pytest.raises(ValueError, match=r"hidden_dim must be a positive int, got 0"):
    cells.CELLS["gru"].init(jax.random.PRNGKey(0), 4, 0)
  with pytest.raises(ValueError, match=r"input_dim must be a positive int, got -3"):
    cells.CELLS["lstm"].init(jax.random.PRNGKey(0), -3, 4)
