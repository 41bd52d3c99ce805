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

"""Shared by the lean-loss tests: value and gradients of an objective, and the lean-vs-dense comparison."""

import jax
import jax.numpy as jnp
import numpy as np

VALUE_RTOL, VALUE_ATOL = 1e-5, 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6


def value_and_grads(fn, inputs, weights):
  """Jitted ``(objective_sum, count, metrics)`` of ``fn`` and d objective_sum / d (student hidden, unembed, features)."""

  def objective_sum(student_hidden, student_unembed, student_features):
    total, count, metrics = fn(student_hidden, student_unembed, student_features, inputs, weights)
    return total, (count, metrics)

  args = (inputs["student_hidden"], inputs["student_unembed"], inputs["student_features"])
  (total, (count, metrics)), grads = jax.jit(jax.value_and_grad(objective_sum, argnums=(0, 1, 2), has_aux=True))(
      *map(jnp.asarray, args)
  )
  return total, count, metrics, grads


def assert_same_objective(got, want, mask, metric_names):
  """``value_and_grads`` results agree: objective, token count, every (sum, count) metric, every gradient."""
  got_total, got_count, got_metrics, got_grads = got
  want_total, want_count, want_metrics, want_grads = want
  np.testing.assert_allclose(float(got_total), float(want_total), rtol=VALUE_RTOL, atol=VALUE_ATOL)
  assert float(got_count) == float(want_count) == float(mask.sum())
  assert set(got_metrics) == set(want_metrics) == set(metric_names)
  for name in metric_names:
    np.testing.assert_allclose(
        float(got_metrics[name][0]), float(want_metrics[name][0]), rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=name
    )
    assert float(got_metrics[name][1]) == float(want_metrics[name][1]), name
  for label, got_grad, want_grad in zip(("hidden", "unembed", "features"), got_grads, want_grads):
    assert got_grad.shape == want_grad.shape and got_grad.dtype == want_grad.dtype, label
    np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=label)
