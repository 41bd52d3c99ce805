# Copyright 2026 The maxtext-distill Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     https://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Tests for maxtext_distill_plugin.loss.schedules against an independent float64 reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import schedules

RTOL = 1e-6
ATOL = 1e-6
MAX_STEPS = 100
# Step 0, early, mid, late, exactly max_steps and well past it (frozen at end); -3 clips to progress 0.
STEPS = (-3, 0, 1, 7, 25, 49, 50, 51, 75, 99, 100, 101, 150, 1000)
START_END = ((1.0, 0.0), (0.2, 0.9), (4.0, 1.0), (0.5, 0.5))


def _reference(kind, start, end, step, max_steps):
  """The spec formulas in float64 Python arithmetic."""
  if kind == "constant" or end is None:
    return float(start)
  progress = min(max(step / max_steps, 0.0), 1.0)
  if kind == "linear":
    return start + (end - start) * progress
  if kind == "cosine":
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
  raise AssertionError(kind)


@pytest.mark.parametrize("kind", schedules.SCHEDULE_KINDS)
@pytest.mark.parametrize("start,end", START_END)
def test_matches_reference_eager(kind, start, end):
  for step in STEPS:
    got = schedules.schedule_value(kind, start, end, step, MAX_STEPS)
    assert got.dtype == jnp.float32
    assert got.shape == ()
    np.testing.assert_allclose(
        float(got), _reference(kind, start, end, step, MAX_STEPS), rtol=RTOL, atol=ATOL, err_msg=f"step={step}"
    )


@pytest.mark.parametrize("kind", schedules.SCHEDULE_KINDS)
def test_matches_reference_under_jit_with_traced_step(kind):
  start, end = 0.9, 0.1
  fn = jax.jit(lambda step: schedules.schedule_value(kind, start, end, step, MAX_STEPS))
  for step in STEPS:
    got = fn(jnp.int32(step))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(
        float(got), _reference(kind, start, end, step, MAX_STEPS), rtol=RTOL, atol=ATOL, err_msg=f"step={step}"
    )
  # The same compiled function vectorised over steps.
  steps = jnp.asarray(STEPS, jnp.int32)
  want = np.array([_reference(kind, start, end, s, MAX_STEPS) for s in STEPS])
  np.testing.assert_allclose(np.asarray(jax.vmap(fn)(steps)), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", schedules.SCHEDULE_KINDS)
def test_endpoints_and_frozen_after_max_steps(kind):
  start, end = 3.0, 0.5
  expected_end = start if kind == "constant" else end
  np.testing.assert_allclose(float(schedules.schedule_value(kind, start, end, 0, MAX_STEPS)), start, rtol=RTOL)
  for step in (MAX_STEPS, MAX_STEPS + 1, 10 * MAX_STEPS):
    np.testing.assert_allclose(
        float(schedules.schedule_value(kind, start, end, step, MAX_STEPS)), expected_end, rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("kind", schedules.SCHEDULE_KINDS)
def test_end_none_keeps_start(kind):
  for step in STEPS:
    np.testing.assert_allclose(float(schedules.schedule_value(kind, 0.7, None, step, MAX_STEPS)), 0.7, rtol=RTOL)


def test_constant_ignores_end():
  for step in STEPS:
    np.testing.assert_allclose(float(schedules.schedule_value("constant", 2.0, 9.0, step, MAX_STEPS)), 2.0, rtol=RTOL)


def test_max_steps_one():
  np.testing.assert_allclose(float(schedules.schedule_value("linear", 1.0, 3.0, 0, 1)), 1.0, rtol=RTOL)
  np.testing.assert_allclose(float(schedules.schedule_value("cosine", 1.0, 3.0, 1, 1)), 3.0, rtol=RTOL)


@pytest.mark.parametrize("kind", ("exponential", "Linear", "", "cos"))
def test_invalid_kind_raises(kind):
  with pytest.raises(ValueError):
    schedules.schedule_value(kind, 1.0, 0.0, 0, MAX_STEPS)


@pytest.mark.parametrize("kind", schedules.SCHEDULE_KINDS)
@pytest.mark.parametrize("max_steps", (0, -1, -100))
def test_non_positive_max_steps_raises(kind, max_steps):
  with pytest.raises(ValueError):
    schedules.schedule_value(kind, 1.0, 0.0, 0, max_steps)
  with pytest.raises(ValueError):
    schedules.schedule_value(kind, 1.0, None, 0, max_steps)


@pytest.mark.parametrize("start,end", ((1.0, 0.0), (0.1, 2.0)))
def test_cosine_stays_closer_to_start_than_linear_in_first_half(start, end):
  for step in range(1, MAX_STEPS // 2):
    cosine = float(schedules.schedule_value("cosine", start, end, step, MAX_STEPS))
    linear = float(schedules.schedule_value("linear", start, end, step, MAX_STEPS))
    assert abs(cosine - start) < abs(linear - start), step
  # At the midpoint both are halfway; in the second half cosine is closer to end.
  half = MAX_STEPS // 2
  np.testing.assert_allclose(
      float(schedules.schedule_value("cosine", start, end, half, MAX_STEPS)),
      float(schedules.schedule_value("linear", start, end, half, MAX_STEPS)),
      rtol=RTOL,
      atol=ATOL,
  )
  for step in range(half + 1, MAX_STEPS):
    cosine = float(schedules.schedule_value("cosine", start, end, step, MAX_STEPS))
    linear = float(schedules.schedule_value("linear", start, end, step, MAX_STEPS))
    assert abs(cosine - end) < abs(linear - end), step


@pytest.mark.parametrize("kind", ("linear", "cosine"))
def test_monotone_between_start_and_end(kind):
  values = np.array([float(schedules.schedule_value(kind, 2.0, 0.5, s, MAX_STEPS)) for s in range(0, MAX_STEPS + 5)])
  assert np.all(np.diff(values) <= 0.0)
  assert np.all((values >= 0.5 - ATOL) & (values <= 2.0 + ATOL))
