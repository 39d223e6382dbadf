"""Recurrent cells as pure functions.

Each cell in `CELLS` is a `Cell`: a named bundle of pure functions,

* ``init(key, input_dim, hidden_dim) -> params``
* ``initial_carry(batch, hidden_dim) -> carry``
* ``step(params, carry, x) -> (carry, h)`` with ``x [batch, input_dim]`` and
  ``h [batch, hidden_dim]``,

plus the two halves of ``step`` that a scan over time needs:
``input_projection(params, xs)`` (``x W_ih + b_ih``, done for all time steps
in one matmul before the scan) and ``recurrent_step(params, carry, gx)`` (the
part that depends on the carry). ``scan_cell`` puts them together. A caller
that assembles ``x W_ih + b_ih`` itself from parts of ``x`` (the decoder:
embedding, input feed) passes it through ``finish_input`` (identity, or the
layer norm of ``ln_lstm``) before ``recurrent_step``.

For ``rnn``, ``lstm`` and ``gru`` the parameters are PyTorch's, transposed:
``w_ih [input_dim, G*hidden]``, ``w_hh [hidden, G*hidden]``, ``b_ih``, ``b_hh``
``[G*hidden]``, with the gates in PyTorch's order (LSTM: i, f, g, o; GRU: r, z,
n), so ``torch_lstm.weight_ih_l0 = params["w_ih"].T`` moves weights across.
Carries hold float32 whatever the matmul dtype, so a bfloat16 model keeps its
cell state in full precision.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from seq2seq_jax import ops

Params = dict[str, jax.Array]


class RNNCarry(NamedTuple):
  h: jax.Array  # [batch, hidden]


class LSTMCarry(NamedTuple):
  h: jax.Array  # [batch, hidden]
  c: jax.Array  # [batch, hidden]


class Cell(NamedTuple):
  """A recurrent cell: pure functions over an explicit params dict."""
  name: str
  num_gates: int
  init: Callable[[jax.Array, int, int], Params]
  initial_carry: Callable[..., Any]
  input_projection: Callable[[Params, jax.Array], jax.Array]
  finish_input: Callable[[Params, jax.Array], jax.Array]
  recurrent_step: Callable[[Params, Any, jax.Array], tuple[Any, jax.Array]]
  step: Callable[[Params, Any, jax.Array], tuple[Any, jax.Array]]
  # recurrent_step(params, carry, gx) == pointwise(params, carry, gx, h @ w_hh):
  # everything but the recurrent matmul, which `scan_cell`'s backward pass
  # batches over time.
  pointwise: Callable[..., tuple[Any, jax.Array]]


def _check_dims(name: str, input_dim: int, hidden_dim: int) -> None:
  for field, value in (("input_dim", input_dim), ("hidden_dim", hidden_dim)):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(
          f"{name} cell: {field} must be a positive int, got {value!r}")


def _gate_blocks(init_fn, key, shape, num_gates):
  """One independent init per gate block, concatenated on the last axis."""
  keys = jax.random.split(key, num_gates)
  return jnp.concatenate([init_fn(k, shape, jnp.float32) for k in keys], -1)


def _init_weights(key, input_dim, hidden_dim, num_gates, forget_gate=None):
  """Xavier/Glorot input weights, orthogonal recurrent weights, zero biases.

  `forget_gate` is the index of the LSTM forget gate, whose input bias is set
  to 1 (Jozefowicz et al. 2015).
  """
  k_ih, k_hh = jax.random.split(key)
  b_ih = jnp.zeros((num_gates * hidden_dim,), jnp.float32)
  if forget_gate is not None:
    b_ih = b_ih.at[forget_gate * hidden_dim:(forget_gate + 1) * hidden_dim].set(1.0)
  return {
      "w_ih": _gate_blocks(jax.nn.initializers.glorot_uniform(), k_ih,
                           (input_dim, hidden_dim), num_gates),
      "w_hh": _gate_blocks(jax.nn.initializers.orthogonal(), k_hh,
                           (hidden_dim, hidden_dim), num_gates),
      "b_ih": b_ih,
      "b_hh": jnp.zeros((num_gates * hidden_dim,), jnp.float32),
  }


_matmul = ops.matmul
_f32 = ops.widen


def linear_input_projection(params: Params, xs: jax.Array) -> jax.Array:
  """`xs W_ih + b_ih`: `[..., input_dim] -> [..., G*hidden]`."""
  return _matmul(xs, params["w_ih"]) + _f32(params["b_ih"])


def _make_step(input_projection, recurrent_step):
  def step(params, carry, x):
    return recurrent_step(params, carry, input_projection(params, x))
  return step


def _make_recurrent_step(pointwise):
  def recurrent_step(params, carry, gx):
    return pointwise(params, carry, gx, _matmul(carry.h, params["w_hh"]))
  return recurrent_step


def _rnn_carry(batch: int, hidden_dim: int, dtype=jnp.float32) -> RNNCarry:
  return RNNCarry(h=jnp.zeros((batch, hidden_dim), dtype))


def _lstm_carry(batch: int, hidden_dim: int, dtype=jnp.float32) -> LSTMCarry:
  zeros = jnp.zeros((batch, hidden_dim), dtype)
  return LSTMCarry(h=zeros, c=zeros)


# Vanilla (Elman) RNN: h' = tanh(x W_ih + b_ih + h W_hh + b_hh).

def rnn_init(key, input_dim, hidden_dim):
  _check_dims("rnn", input_dim, hidden_dim)
  return _init_weights(key, input_dim, hidden_dim, 1)


def rnn_pointwise(params, carry, gx, gh):
  del carry
  h = jnp.tanh(_f32(gx) + _f32(gh) + _f32(params["b_hh"]))
  return RNNCarry(h=h), h


# LSTM, gates i, f, g, o as in torch.nn.LSTM.

def lstm_init(key, input_dim, hidden_dim):
  _check_dims("lstm", input_dim, hidden_dim)
  return _init_weights(key, input_dim, hidden_dim, 4, forget_gate=1)


def _lstm_update(gates, c):
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return c, jax.nn.sigmoid(o)


def lstm_pointwise(params, carry, gx, gh):
  gates = _f32(gx) + _f32(gh) + _f32(params["b_hh"])
  c, o = _lstm_update(gates, carry.c)
  h = o * jnp.tanh(c)
  return LSTMCarry(h=h, c=c), h


# GRU, gates r, z, n as in torch.nn.GRU:
#   n = tanh(x W_in + b_in + r * (h W_hn + b_hn)),  h' = (1 - z) * n + z * h.

def gru_init(key, input_dim, hidden_dim):
  _check_dims("gru", input_dim, hidden_dim)
  return _init_weights(key, input_dim, hidden_dim, 3)


def gru_pointwise(params, carry, gx, gh):
  gh = _f32(gh) + _f32(params["b_hh"])
  x_r, x_z, x_n = jnp.split(_f32(gx), 3, axis=-1)
  h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * h_n)
  h = (1.0 - z) * n + z * carry.h
  return RNNCarry(h=h), h


# Layer-normalised LSTM (Ba et al. 2016): the input and recurrent gate
# pre-activations are normalised separately over all 4*hidden units, and the
# cell state before the output tanh as well.
#   gates = LN(x W_ih) + LN(h W_hh) + b,  c' = f*c + i*g,  h' = o * tanh(LN(c')).

_LN_EPS = 1e-5


def _layer_norm(x, scale, bias):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + _LN_EPS) * scale + bias


def ln_lstm_init(key, input_dim, hidden_dim):
  _check_dims("ln_lstm", input_dim, hidden_dim)
  weights = _init_weights(key, input_dim, hidden_dim, 4, forget_gate=1)
  four_h = 4 * hidden_dim
  return {
      "w_ih": weights["w_ih"],
      "w_hh": weights["w_hh"],
      "b": weights["b_ih"],  # forget bias 1
      "ln_ih_scale": jnp.ones((four_h,), jnp.float32),
      "ln_ih_bias": jnp.zeros((four_h,), jnp.float32),
      "ln_hh_scale": jnp.ones((four_h,), jnp.float32),
      "ln_hh_bias": jnp.zeros((four_h,), jnp.float32),
      "ln_c_scale": jnp.ones((hidden_dim,), jnp.float32),
      "ln_c_bias": jnp.zeros((hidden_dim,), jnp.float32),
  }


def ln_lstm_finish_input(params, gx):
  return _layer_norm(_f32(gx), _f32(params["ln_ih_scale"]), _f32(params["ln_ih_bias"]))


def ln_lstm_input_projection(params, xs):
  return ln_lstm_finish_input(params, _matmul(xs, params["w_ih"]))


def ln_lstm_pointwise(params, carry, gx, gh):
  gh = _layer_norm(_f32(gh), _f32(params["ln_hh_scale"]), _f32(params["ln_hh_bias"]))
  c, o = _lstm_update(_f32(gx) + gh + _f32(params["b"]), carry.c)
  h = o * jnp.tanh(_layer_norm(c, _f32(params["ln_c_scale"]), _f32(params["ln_c_bias"])))
  return LSTMCarry(h=h, c=c), h


def _identity(params, gx):
  del params
  return gx


def _cell(name, num_gates, init, initial_carry, pointwise,
          input_projection=linear_input_projection, finish_input=_identity):
  recurrent_step = _make_recurrent_step(pointwise)
  return Cell(name=name, num_gates=num_gates, init=init,
              initial_carry=initial_carry, input_projection=input_projection,
              finish_input=finish_input, recurrent_step=recurrent_step,
              step=_make_step(input_projection, recurrent_step), pointwise=pointwise)


CELLS: dict[str, Cell] = {
    "rnn": _cell("rnn", 1, rnn_init, _rnn_carry, rnn_pointwise),
    "lstm": _cell("lstm", 4, lstm_init, _lstm_carry, lstm_pointwise),
    "gru": _cell("gru", 3, gru_init, _rnn_carry, gru_pointwise),
    "ln_lstm": _cell("ln_lstm", 4, ln_lstm_init, _lstm_carry,
                     ln_lstm_pointwise, ln_lstm_input_projection,
                     ln_lstm_finish_input),
}


def get_cell(name: str) -> Cell:
  """Looks a cell up by name, with an error that lists the valid names."""
  try:
    return CELLS[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"unknown cell {name!r}; valid cells: {', '.join(sorted(CELLS))}") from None


def masked_carry(mask, new_carry, old_carry):
  """Keeps `old_carry` where `mask [batch]` is False (padded time steps)."""
  return jax.tree.map(lambda n, o: jnp.where(mask[:, None], n, o),
                      new_carry, old_carry)


def scan_cell(cell: Cell, params: Params, carry, xs: jax.Array,
              mask: jax.Array | None = None, reverse: bool = False,
              unroll: int = 1):
  """Runs `cell` over a time-major sequence.

  The input projection of all steps is one matmul before the scan; the scan
  body holds only the recurrent part. Where `mask` is False the carry is left
  unchanged, so trailing padding does not alter the final state, and a
  `reverse` scan starts at each sequence's last real token.

  The gradient is the exact one, computed as cuDNN does it: the backward scan
  carries only `dh`, and the recurrent weights' gradient is one matmul over
  all time steps after it, instead of a small matmul accumulated per step.

  Args:
    cell: the cell.
    params: its parameters.
    carry: the initial carry, fields `[batch, hidden]`.
    xs: inputs `[time, batch, input_dim]`.
    mask: optional `[time, batch]` bool, True on real tokens.
    reverse: scan from the last time step to the first.
    unroll: `jax.lax.scan` unroll factor.

  Returns:
    `(final_carry, hs)` with `hs [time, batch, hidden]`.
  """
  return scan_projected(cell, params, carry, cell.input_projection(params, xs), mask,
                        reverse, unroll)


def scan_projected(cell: Cell, params: Params, carry, gx: jax.Array,
                   mask: jax.Array | None = None, reverse: bool = False,
                   unroll: int = 1):
  """`scan_cell` for inputs already projected: `gx [time, batch, G*hidden]`."""
  rec = {k: v for k, v in params.items() if k not in ("w_ih", "b_ih")}
  return _recurrence(cell, reverse, unroll, rec, carry, gx, mask)


def _pointwise_masked(cell, small, carry, gx_t, gh_t, mask_t):
  new_carry, h = cell.pointwise(small, carry, gx_t, gh_t)
  if mask_t is not None:
    new_carry = masked_carry(mask_t, new_carry, carry)
  return new_carry, h


def _recurrence_fwd(cell, reverse, unroll, rec, carry, gx, mask):
  small = {k: v for k, v in rec.items() if k != "w_hh"}

  def body(carry, inputs):
    gx_t, mask_t = inputs
    gh_t = _matmul(carry.h, rec["w_hh"])
    new_carry, h = _pointwise_masked(cell, small, carry, gx_t, gh_t, mask_t)
    return new_carry, (h, carry, gh_t)

  final, (hs, carries_in, ghs) = jax.lax.scan(body, carry, (gx, mask), reverse=reverse,
                                              unroll=unroll)
  return (final, hs), (rec, carries_in, ghs, gx, mask)


def _recurrence_bwd(cell, reverse, unroll, residuals, cotangents):
  rec, carries_in, ghs, gx, mask = residuals
  d_final, d_hs = cotangents
  small = {k: v for k, v in rec.items() if k != "w_hh"}
  w_hh_t = rec["w_hh"].T

  def body(d_carry, inputs):
    carry_t, gx_t, gh_t, mask_t, dh_t = inputs
    _, vjp = jax.vjp(
        lambda c, g, r, s: _pointwise_masked(cell, s, c, g, r, mask_t),
        carry_t, gx_t, gh_t, small)
    d_prev, d_gx, d_gh, d_small = vjp((d_carry, dh_t))
    d_prev = d_prev._replace(h=d_prev.h + _matmul(d_gh, w_hh_t).astype(d_prev.h.dtype))
    return d_prev, (d_gx, d_gh, d_small)

  d_carry0, (d_gx, d_ghs, d_small) = jax.lax.scan(
      body, d_final, (carries_in, gx, ghs, mask, d_hs), reverse=not reverse, unroll=unroll)
  # One matmul over all steps: dW_hh = sum_t h_{t-1}^T dgh_t.
  d_w_hh = ops.einsum("tbh,tbg->hg", carries_in.h, d_ghs).astype(rec["w_hh"].dtype)
  d_rec = {k: jnp.sum(v, axis=0) for k, v in d_small.items()}
  d_rec["w_hh"] = d_w_hh
  return d_rec, d_carry0, d_gx, None


_recurrence = jax.custom_vjp(
    lambda cell, reverse, unroll, rec, carry, gx, mask:
    _recurrence_fwd(cell, reverse, unroll, rec, carry, gx, mask)[0],
    nondiff_argnums=(0, 1, 2))
_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
