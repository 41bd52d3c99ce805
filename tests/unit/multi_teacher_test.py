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


"""Several teachers: the per-token mixture and the weighted or routed losses against float64 NumPy, on the dense and
the lean path (values and student gradients), and the degenerate cases that must equal one teacher."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import paths
from tests import numpy_reference as ref

B, S, D, V = 2, 3, 4, 7
ALPHA, T = 0.6, 2.0
MASK = np.array([[1, 1, 0], [1, 1, 1]], bool)
OPTIONS = heads.LossOptions(top_k=3, seq_chunk=2, vocab_chunk=3)  # tiles that divide neither S nor V


def _weights():
  return objective.LossWeights(alpha=jnp.float32(ALPHA), temperature=jnp.float32(T), beta=jnp.float32(0.0))


def _arrays(seed, teachers=3):
  rng = np.random.default_rng(seed)
  return {
      "student_hidden": rng.standard_normal((B, S, D)),
      "student_unembed": rng.standard_normal((D, V)),
      "teacher_hidden": [rng.standard_normal((B, S, D + 1 + i)) for i in range(teachers)],  # widths differ
      "teacher_unembed": [rng.standard_normal((D + 1 + i, V)) for i in range(teachers)],
      "labels": rng.integers(0, V, (B, S)),
  }


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _teacher_heads(a, lean):
  if lean:
    return tuple(heads.TeacherHidden(_f32(h), _f32(w)) for h, w in zip(a["teacher_hidden"], a["teacher_unembed"]))
  return tuple(heads.TeacherLogits(_f32(h @ w)) for h, w in zip(a["teacher_hidden"], a["teacher_unembed"]))


def _mean_objective(a, teacher, lean, options=OPTIONS):
  """The objective (token mean) and metrics as a function of the student's hidden states and unembedding."""

  def fn(hidden, unembed):
    student = heads.StudentHidden(hidden, unembed) if lean else heads.StudentLogits(hidden @ unembed)
    total, count, metrics = paths.distillation_terms(
        student, teacher, jnp.asarray(a["labels"]), jnp.asarray(MASK), _weights(), options
    )
    return total / count, metrics

  return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(_f32(a["student_hidden"]), _f32(a["student_unembed"]))


def _reference(a, teacher_logp_T, name="forward_kl"):
  """The float64 objective and its gradients (central differences) in the student's hidden states and unembedding."""
  hidden, unembed = a["student_hidden"], a["student_unembed"]

  def objective_of(h, w):
    return ref.distillation_objective(teacher_logp_T, h @ w, a["labels"], MASK, ALPHA, T, name)

  return (
      objective_of(hidden, unembed),
      ref.finite_difference(lambda h: objective_of(h, unembed), hidden),
      ref.finite_difference(lambda w: objective_of(hidden, w), unembed),
  )


def _teacher_logits(a):
  return [h @ w for h, w in zip(a["teacher_hidden"], a["teacher_unembed"])]


@pytest.mark.parametrize("lean", (False, True), ids=("dense", "lean"))
@pytest.mark.parametrize("name", ("forward_kl", "jsd"))
def test_mixture_of_three_matches_numpy_values_and_gradients(lean, name):
  a, weights = _arrays(0), (0.5, 0.3, 0.2)
  options = heads.LossOptions(divergence=name, top_k=3, seq_chunk=2, vocab_chunk=3)
  (value, metrics), grads = _mean_objective(a, heads.TeacherMixture(_teacher_heads(a, lean), weights), lean, options)
  want, want_hidden, want_unembed = _reference(a, ref.mixture_log_probs(_teacher_logits(a), weights, T), name)
  np.testing.assert_allclose(float(value), want, rtol=2e-5)
  np.testing.assert_allclose(np.asarray(grads[0]), want_hidden, rtol=2e-3, atol=2e-5)
  np.testing.assert_allclose(np.asarray(grads[1]), want_unembed, rtol=2e-3, atol=2e-5)
  # The teacher's NLL is the mixture's at T = 1.
  mixture_at_1 = ref.mixture_log_probs(_teacher_logits(a), weights, 1.0)
  nll = -np.take_along_axis(mixture_at_1, a["labels"][..., None], -1)[..., 0]
  got_nll = metrics[metric_names.TEACHER_LOSS]
  np.testing.assert_allclose(float(got_nll[0]) / float(got_nll[1]), np.sum(nll * MASK) / MASK.sum(), rtol=2e-5)


@pytest.mark.parametrize("lean", (False, True), ids=("dense", "lean"))
def test_weighted_losses_of_three_match_numpy(lean):
  a, weights = _arrays(1), (0.2, 0.5, 0.3)
  names = ("a", "b", "c")
  (value, metrics), grads = _mean_objective(a, heads.TeacherSet(_teacher_heads(a, lean), names, weights), lean)
  each = [_reference(a, ref.log_softmax(z / T)) for z in _teacher_logits(a)]
  np.testing.assert_allclose(float(value), sum(w * e[0] for w, e in zip(weights, each)), rtol=2e-5)
  for index in (0, 1):
    want = sum(w * e[index + 1] for w, e in zip(weights, each))
    np.testing.assert_allclose(np.asarray(grads[index]), want, rtol=2e-3, atol=2e-5)
  for name in names:
    fraction = metrics[metric_names.per_teacher(name, metric_names.TEACHER_TOKEN_FRACTION)]
    assert float(fraction[0]) == float(fraction[1]) == MASK.sum()


@pytest.mark.parametrize("lean", (False, True), ids=("dense", "lean"))
@pytest.mark.parametrize("mixture", ("distribution", "loss"))
def test_two_identical_teachers_at_half_equal_one_teacher(lean, mixture):
  a = _arrays(2, teachers=1)
  (one,) = _teacher_heads(a, lean)
  pair = (one, one)
  two = (
      heads.TeacherMixture(pair, (0.5, 0.5))
      if mixture == "distribution"
      else heads.TeacherSet(pair, ("x", "y"), (0.5, 0.5))
  )
  (value, metrics), grads = _mean_objective(a, two, lean)
  (want_value, want_metrics), want_grads = _mean_objective(a, one, lean)
  if mixture == "loss":  # 0.5 x + 0.5 x is x in floating point: the value bit for bit; the backward's matmuls take
    # the two halves apart and round each (1 ulp)
    assert float(value) == float(want_value)
    for got, want in zip(grads, want_grads):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
  else:  # log(0.5 p + 0.5 p) rounds once more than log p
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-6)
    for got, want in zip(grads, want_grads):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
  for name, pair in want_metrics.items():
    np.testing.assert_allclose(np.asarray(metrics[name]), np.asarray(pair), rtol=1e-5, atol=1e-7, err_msg=name)
