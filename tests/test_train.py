"""Every cell x attention x input feeding x bidirectional learns a tiny copy task."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax import cells
from seq2seq_jax.models.rnn import RNNConfig, RNNSeq2Seq
from seq2seq_jax.models.rnn import attention as attn
from seq2seq_jax.tokens import EOS_ID
from seq2seq_jax.training import optim, schedules, step

VOCAB, LENGTH, BATCH = 8, 5, 16


def copy_batch(seed):
  """Sources of LENGTH random tokens; the target is the source, then EOS."""
  src = np.random.default_rng(seed).integers(4, VOCAB, (BATCH, LENGTH)).astype(np.int32)
  tgt = np.concatenate([src, np.full((BATCH, 1), EOS_ID, np.int32)], 1)
  return {"src": jnp.asarray(src), "tgt": jnp.asarray(tgt)}


def train_losses(model, steps, teacher_forcing=None, lr=0.02):
  tx = optim.make_optimizer(learning_rate=lr, clip_norm=1.0)
  state = step.init_state(model, tx, jax.random.PRNGKey(0), copy_batch(0))
  step_fn = jax.jit(step.make_train_step(model, tx, teacher_forcing))
  batches = [copy_batch(i) for i in range(4)]
  history = []
  for i in range(steps):
    state, metrics = step_fn(state, batches[i % 4], jax.random.PRNGKey(1))
    history.append(jax.device_get(metrics))
  return history


COMBOS = list(itertools.product(cells.CELLS, attn.ATTENTION_TYPES, [False, True], [False, True]))


@pytest.mark.parametrize("cell,attention,feeding,bidirectional", COMBOS)
def test_every_combination_learns_copy(cell, attention, feeding, bidirectional):
  model = RNNSeq2Seq(RNNConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, cell=cell,
                         attention=attention, input_feeding=feeding,
                         bidirectional=bidirectional, embed_dim=8, hidden_dim=16))
  history = train_losses(model, steps=40)
  first = np.mean([h["loss"] for h in history[:4]])
  last = np.mean([h["loss"] for h in history[-4:]])
  assert np.isfinite(last)
  assert last < 0.75 * first, (first, last)


def test_scheduled_sampling_train_step_reports_ratio():
  model = RNNSeq2Seq(RNNConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, embed_dim=8,
                         hidden_dim=16, attention="dot", dropout=0.1))
  schedule = schedules.make_schedule("linear", k=1.0, c=0.02, eps_min=0.0)
  history = train_losses(model, steps=56, teacher_forcing=schedule)
  for i, h in enumerate(history):
    np.testing.assert_allclose(h["tf_prob"], max(0.0, 1.0 - 0.02 * i), atol=1e-6)
  # Early steps are fully teacher-forced (fast path); late ones sample.
  assert history[0]["tf_ratio"] == 1.0
  assert history[-1]["tf_ratio"] == 0.0
  assert 0.2 < history[25]["tf_ratio"] < 0.8
  assert history[-1]["loss"] < history[0]["loss"]


def test_gradient_clipping_bounds_the_update():
  """SGD with lr 1 and clip norm c moves the params by exactly min(|g|, c)."""
  model = RNNSeq2Seq(RNNConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, embed_dim=8,
                         hidden_dim=16))
  tx = optim.make_optimizer(learning_rate=1.0, clip_norm=0.01, optimizer="sgd")
  state = step.init_state(model, tx, jax.random.PRNGKey(0), copy_batch(0))
  before = jax.device_get(state.params)
  train_step = jax.jit(step.make_train_step(model, tx))
  state, metrics = train_step(state, copy_batch(0), jax.random.PRNGKey(1))
  moved = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in
                      zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(before))))
  assert metrics["grad_norm"] > 0.01
  np.testing.assert_allclose(moved, 0.01, rtol=1e-4)


def test_unknown_optimizer():
  with pytest.raises(ValueError, match=r"unknown train.optimizer 'adamw2'; valid optimizers"):
    optim.make_optimizer(optimizer="adamw2")


def test_bfloat16_matches_float32_and_learns():
  kw = dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, embed_dim=8, hidden_dim=16,
            attention="general", input_feeding=True)
  f32, bf16 = RNNSeq2Seq(RNNConfig(**kw)), RNNSeq2Seq(RNNConfig(**kw, dtype="bfloat16"))
  batch = copy_batch(0)
  variables = f32.init(jax.random.PRNGKey(0), batch["src"], batch["tgt"])
  out32 = f32.apply(variables, batch["src"], batch["tgt"]).logits
  out16 = bf16.apply(variables, batch["src"], batch["tgt"]).logits
  assert out16.dtype == jnp.float32  # bf16 matmuls, float32 results
  np.testing.assert_allclose(out16, out32, atol=0.05)
  history = train_losses(bf16, steps=40)
  assert history[-1]["loss"] < 0.75 * history[0]["loss"]


def test_teacher_forcing_from_config():
  assert schedules.teacher_forcing_from_config({"schedule": "constant", "ratio": 1.0}) is None
  schedule = schedules.teacher_forcing_from_config(
      {"schedule": "inverse_sigmoid", "k": 10.0, "ratio": 1.0, "c": 0.1})
  np.testing.assert_allclose(schedule(20), 10.0 / (10.0 + np.exp(2.0)), rtol=1e-6)
