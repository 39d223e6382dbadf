"""Each teacher-forcing schedule against its formula (Bengio et al. 2015, 2.4)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seq2seq_jax.training import schedules

STEPS = [0, 1, 10, 500, 1234, 10_000, 50_000]

FORMULAS = {
    "constant": ({"ratio": 0.7}, lambda i: 0.7),
    "linear": ({"k": 1.0, "c": 1e-4, "eps_min": 0.1}, lambda i: max(0.1, 1.0 - 1e-4 * i)),
    "exponential": ({"k": 0.999}, lambda i: 0.999 ** i),
    "inverse_sigmoid": ({"k": 500.0}, lambda i: 500.0 / (500.0 + math.exp(i / 500.0))),
    "step": ({"steps": 1234}, lambda i: 1.0 if i < 1234 else 0.0),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_schedule_matches_formula(name):
  params, formula = FORMULAS[name]
  schedule = schedules.make_schedule(name, **params)
  jitted = jax.jit(schedule)
  for i in STEPS:
    expected = formula(i)
    np.testing.assert_allclose(schedule(i), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jitted(jnp.int32(i)), expected, rtol=1e-5, atol=1e-7)


def test_every_schedule_has_a_formula_test():
  assert set(FORMULAS) == set(schedules.SCHEDULES)


def test_extra_params_are_ignored_and_always_tf_detected():
  schedule = schedules.make_schedule("exponential", k=0.5, c=3.0, steps=2, ratio=0.1)
  np.testing.assert_allclose(schedule(3), 0.125)
  assert schedules.is_always_teacher_forced("constant", ratio=1.0)
  assert not schedules.is_always_teacher_forced("constant", ratio=0.99)
  assert not schedules.is_always_teacher_forced("step", steps=10**9)


def test_bad_schedules():
  with pytest.raises(ValueError, match=r"unknown teacher_forcing.schedule 'sigmoid'.*"
                                       r"constant, linear, exponential, inverse_sigmoid, step"):
    schedules.make_schedule("sigmoid")
  with pytest.raises(ValueError, match=r"teacher_forcing.k=0.5 .*'inverse_sigmoid': must be >= 1"):
    schedules.make_schedule("inverse_sigmoid", k=0.5)
  with pytest.raises(ValueError, match=r"teacher_forcing.ratio=1.5 .*in \[0, 1\]"):
    schedules.make_schedule("constant", ratio=1.5)
