"""Learning-rate schedules against their formulas, and the optimizer's updates
against Adam and SGD written out."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seq2seq_jax import config_schema, models
from seq2seq_jax.tokens import EOS_ID
from seq2seq_jax.training import early_stopping, optim, step


def train_config(**fields):
  base = dict(optimizer="adam", learning_rate=3e-3, clip_norm=0.0, num_steps=100)
  return config_schema.Train(**{**base, **fields})


def schedule_values(**fields):
  schedule = optim.learning_rate_schedule(train_config(**fields))
  return lambda steps: np.array([float(schedule(i)) for i in steps])


STEPS = [0, 1, 2, 7, 8, 9, 15, 16, 40, 99, 150]


def test_rsqrt_is_the_transformer_papers_formula():
  d, w = 512, 8  # lr (d * w)^-0.5 makes ours d^-0.5 * min(s^-0.5, s * w^-1.5), s = step + 1
  got = schedule_values(lr_schedule="rsqrt", warmup_steps=w, learning_rate=(d * w) ** -0.5)(STEPS)
  paper = [d ** -0.5 * min((i + 1) ** -0.5, (i + 1) * w ** -1.5) for i in STEPS]
  np.testing.assert_allclose(got, paper, rtol=1e-6)
  assert got.argmax() == STEPS.index(w - 1)  # the peak at the w-th update


@pytest.mark.parametrize("warmup", [0, 8])
def test_cosine_warms_up_linearly_then_decays_to_zero_at_num_steps(warmup):
  lr, total = 3e-3, 100
  got = schedule_values(lr_schedule="cosine", warmup_steps=warmup, learning_rate=lr,
                        num_steps=total)(STEPS)
  want = [lr * i / warmup if i < warmup else
          lr * 0.5 * (1 + math.cos(math.pi * min(i - warmup, total - warmup) / (total - warmup)))
          for i in STEPS]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=lr * 1e-6)  # float32 near 0


def test_halving_halves_every_n_steps_after_k():
  lr, k, n = 3e-3, 9, 7
  got = schedule_values(lr_schedule="halving", lr_halve_after=k, lr_halve_every=n,
                        learning_rate=lr)(STEPS)
  np.testing.assert_allclose(got, [lr * 0.5 ** (max(0, i - k) // n) for i in STEPS], rtol=1e-7)


def test_constant_and_a_config_saved_before_schedules():
  old = config_schema.build({"train": dict(optimizer="adam", learning_rate=3e-3, clip_norm=5.0,
                                           num_steps=10)},  # no schedule or Adam fields
                            saved=True).train
  np.testing.assert_allclose(schedule_values()(STEPS), 3e-3, rtol=1e-7)
  tx = optim.optimizer_from_config(old)
  # A constant rate keeps the optimizer state of before schedules: no counter of its own.
  leaves = jax.tree.leaves(tx.init({"w": jnp.zeros(3)}))
  assert len(leaves) == 3  # Adam's count, mu, nu


def scalar_updates(tx, grads):
  params = {"w": jnp.zeros(())}
  state, out = tx.init(params), []
  for g in grads:
    update, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    out.append(float(update["w"]))
  return np.array(out)


GRADS = [0.5, -1.5, 2.0, 0.25, -0.75, 1.0]


def test_sgd_applies_the_schedule_of_each_step():
  cfg = train_config(optimizer="sgd", lr_schedule="halving", lr_halve_after=1, lr_halve_every=2,
                     learning_rate=0.1)
  got = scalar_updates(optim.optimizer_from_config(cfg), GRADS)
  want = [-0.1 * 0.5 ** (max(0, i - 1) // 2) * g for i, g in enumerate(GRADS)]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_adam_with_configured_betas_and_epsilon_and_a_schedule():
  b1, b2, eps, w = 0.9, 0.98, 1e-9, 3
  cfg = train_config(lr_schedule="rsqrt", warmup_steps=w, learning_rate=0.01, adam_b1=b1,
                     adam_b2=b2, adam_eps=eps)
  got = scalar_updates(optim.optimizer_from_config(cfg), GRADS)
  m = v = 0.0
  want = []
  for t, g in enumerate(GRADS, 1):  # Kingma & Ba, Algorithm 1
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    lr = 0.01 * min(t / w, math.sqrt(w / t))
    want.append(-lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_adamw_decays_the_matrices_apart_from_the_gradient():
  """Loshchilov & Hutter 2019, Algorithm 2 (optax's and PyTorch's form: the decay
  scaled by the rate); biases (one dimension) do not decay."""
  b1, b2, eps, wd, lr = 0.9, 0.98, 1e-9, 0.1, 0.01
  cfg = train_config(optimizer="adamw", learning_rate=lr, adam_b1=b1, adam_b2=b2, adam_eps=eps,
                     weight_decay=wd)
  tx = optim.optimizer_from_config(cfg)
  params = {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full((2,), 0.5)}
  state = tx.init(params)
  p = {"kernel": 0.5, "bias": 0.5}
  m = v = 0.0
  for t, g in enumerate(GRADS, 1):
    updates, state = tx.update(jax.tree.map(lambda x, g=g: jnp.full_like(x, g), params), state,
                               params)
    params = optax.apply_updates(params, updates)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    adam = (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
    p = {"kernel": p["kernel"] - lr * (adam + wd * p["kernel"]), "bias": p["bias"] - lr * adam}
    for name in p:
      np.testing.assert_allclose(params[name], p[name], rtol=1e-5, err_msg=(name, t))
  assert p["kernel"] < p["bias"]  # the decay acted


def test_adafactor_decays_the_matrices_by_weight_decay_without_the_rate():
  cfg = train_config(optimizer="adafactor", learning_rate=0.1, weight_decay=0.01)
  tx = optim.optimizer_from_config(cfg)
  params = {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 2.0)}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.01 * 2.0)  # no gradient: the decay alone
  np.testing.assert_array_equal(updates["bias"], 0.0)


def test_the_train_step_reports_the_rate_of_its_update():
  model = models.build(dict(cell="gru", attention="dot", embed_dim=4, hidden_dim=6), 8, 8)
  cfg = train_config(lr_schedule="halving", lr_halve_after=0, lr_halve_every=2,
                     learning_rate=0.1)
  tx = optim.optimizer_from_config(cfg)
  batch = {"src": jnp.array([[4, 5, 6]], jnp.int32), "tgt": jnp.array([[5, 4, EOS_ID]], jnp.int32)}
  state = step.init_state(model, tx, jax.random.PRNGKey(0), batch)
  train_step = jax.jit(step.make_train_step(model, tx,
                                            learning_rate=optim.learning_rate_schedule(cfg)))
  rates = []
  for _ in range(5):
    state, metrics = train_step(state, batch, jax.random.PRNGKey(1))
    rates.append(float(metrics["learning_rate"]))
  np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.05, 0.025], rtol=1e-6)


def test_the_moving_average_of_the_weights_is_its_formula_and_what_is_served():
  """ema_t = d * ema_(t-1) + (1 - d) * params_t, ema_0 = params_0 (Polyak averaging)."""
  model = models.build(dict(cell="gru", attention="dot", embed_dim=4, hidden_dim=6), 8, 8)
  cfg = train_config(learning_rate=0.1, ema_decay=0.9)
  tx = optim.optimizer_from_config(cfg)
  batch = {"src": jnp.array([[4, 5, 6]], jnp.int32), "tgt": jnp.array([[5, 4, EOS_ID]], jnp.int32)}
  state = step.init_state(model, tx, jax.random.PRNGKey(0), batch, True)
  train_step = jax.jit(step.make_train_step(model, tx, ema_decay=cfg.ema_decay))
  want = [np.asarray(x, np.float64) for x in jax.tree.leaves(state.params)]
  for _ in range(4):
    state, _ = train_step(state, batch, jax.random.PRNGKey(1))
    want = [0.9 * e + 0.1 * np.asarray(p, np.float64)
            for e, p in zip(want, jax.tree.leaves(state.params))]
  for got, w in zip(jax.tree.leaves(state.served), want):
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)
  assert any(not np.allclose(e, p) for e, p in zip(want, jax.tree.leaves(state.params)))
  assert step.init_state(model, tx, jax.random.PRNGKey(0), batch).ema is None  # off: no leaf


def test_plateau_brings_the_rate_down_after_patience_evaluations_without_improvement():
  """Worked by hand: patience 2, factor 0.5, dev BLEU improving only by more than 0.5."""
  cfg = train_config(lr_schedule="plateau", plateau_factor=0.5, plateau_patience=2,
                     early_stopping=config_schema.EarlyStopping(metric="bleu", min_delta=0.5))
  bleu = [10, 12, 12.3, 11, 12.4, 13, 13, 13, 13]
  # improved:   y   y   n     n(2: down) n   y(> 12.5)  n  n(2: down)  n
  want = [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
  records = [{"split": "dev", "step": 100 * (i + 1), "bleu": b} for i, b in enumerate(bleu)]
  plateau = early_stopping.Plateau(cfg)
  got = []
  for record in records:
    plateau.update(record["step"], record)
    got.append(plateau.scale)
  assert got == want
  for resumed_at in range(len(records)):  # rebuilt from metrics.jsonl, then going on
    resumed = early_stopping.Plateau(cfg, records[:resumed_at])
    for record in records[resumed_at:]:
      resumed.update(record["step"], record)
    assert resumed.scale == want[-1] and resumed.since_change == plateau.since_change
  assert optim.learning_rate_schedule(cfg)(123) == cfg.learning_rate  # the step reads it as is
  off = early_stopping.Plateau(train_config())
  assert not any(off.update(r["step"], r) for r in records) and off.scale == 1


@pytest.mark.parametrize("fields,message", [
    (dict(lr_schedule="noam"), r"train.lr_schedule='noam' is not valid; valid schedules: "
     r"constant, rsqrt, cosine, halving, plateau"),
    (dict(lr_schedule="rsqrt", warmup_steps=0), r"train.warmup_steps must be an int >= 1"),
    (dict(learning_rate=-1.0), r"train.learning_rate must be a number > 0, got -1.0"),
    (dict(lr_halve_every=0), r"train.lr_halve_every must be an int >= 1"),
    (dict(adam_b2=1.0), r"train.adam_b2 must be in \[0, 1\)"),
    (dict(adam_eps=0.0), r"train.adam_eps must be a number > 0"),
    (dict(weight_decay=0.01), r"train.weight_decay=0.01 needs train.optimizer=adamw or "
     r"adafactor \(decoupled weight decay; adam has none\)"),
    (dict(optimizer="adamw", weight_decay=-1.0), r"train.weight_decay must be a number >= 0"),
    (dict(lr_schedule="plateau", plateau_factor=1.0), r"train.plateau_factor must be in \(0, 1\)"),
    (dict(lr_schedule="plateau", plateau_patience=0),
     r"train.plateau_patience must be an int >= 1"),
    (dict(ema_decay=1.0), r"train.ema_decay must be in \[0, 1\) \(0: off\), got 1.0"),
])
def test_bad_fields_are_named(fields, message):
  with pytest.raises(ValueError, match=message):
    optim.check(train_config(**fields))
