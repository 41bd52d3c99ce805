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

"""The online diagnostics computed only on the steps that ask for them (``diagnose``), on the dense and lean paths.

Where the traced flag is true, every metric and gradient equals the ungated call's; where it is false, the
diagnostics are ``(0, 0)`` pairs and everything else is unchanged, so a window's summed pairs average the
diagnostics over the steps that computed them. The step's own schedule (:func:`step.diagnostics_due`) is checked
against the trainer's logging windows.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import chunked_objective
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.training import step as step_lib
from tests.unit import lean_loss_testing

B, S, D, V, K = 2, 12, 8, 40, 5
MASK = np.array([[1] * 12, [1] * 7 + [0] * 5], dtype=bool)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "student_hidden": rng.standard_normal((B, S, D)).astype(np.float32),
      "student_unembed": (2.0 * rng.standard_normal((D, V)) / np.sqrt(D)).astype(np.float32),
      "teacher_hidden": rng.standard_normal((B, S, D)).astype(np.float32),
      "teacher_unembed": (3.0 * rng.standard_normal((D, V)) / np.sqrt(D)).astype(np.float32),
      "labels": rng.integers(0, V, size=(B, S)).astype(np.int32),
      "student_features": np.zeros((1, B, S, 4), np.float32),  # unused: no feature loss
  }


def _lean(student_hidden, student_unembed, _, inputs, weights, diagnose):
  return chunked_objective.distillation_terms_from_hidden(
      student_hidden,
      student_unembed,
      jnp.asarray(inputs["teacher_hidden"]),
      jnp.asarray(inputs["teacher_unembed"]),
      jnp.asarray(inputs["labels"]),
      jnp.asarray(MASK),
      weights,
      seq_chunk=5,
      vocab_chunk=16,
      divergence="jsd",
      diagnostics=True,
      coverage_top_k=K,
      diagnose=diagnose,
  )


def _dense(student_hidden, student_unembed, _, inputs, weights, diagnose):
  teacher_logits = jnp.asarray(inputs["teacher_hidden"]) @ jnp.asarray(inputs["teacher_unembed"])
  return objective.distillation_terms(
      student_hidden @ student_unembed,
      heads.TeacherLogits(logits_BxSxV=teacher_logits),
      jnp.asarray(inputs["labels"]),
      jnp.asarray(MASK),
      weights,
      top_k=K,
      diagnose=diagnose,
  )


def _value_and_grads(path, inputs, weights, diagnose):
  """``lean_loss_testing.value_and_grads`` with the flag a traced argument, as the step passes it."""

  def objective_sum(student_hidden, student_unembed, flag):
    total, count, metrics = path(student_hidden, student_unembed, None, inputs, weights, flag)
    return total, (count, metrics)

  if diagnose is None:
    return lean_loss_testing.value_and_grads(functools.partial(path, diagnose=None), inputs, weights)
  run = jax.jit(jax.value_and_grad(objective_sum, argnums=(0, 1), has_aux=True))
  (total, (count, metrics)), grads = run(
      jnp.asarray(inputs["student_hidden"]), jnp.asarray(inputs["student_unembed"]), jnp.asarray(diagnose)
  )
  return total, count, metrics, grads


@pytest.mark.parametrize("path", [_lean, _dense], ids=["lean", "dense"])
def test_diagnostics_only_where_asked_and_nothing_else_changes(path):
  inputs = _inputs()
  weights = objective.LossWeights(alpha=jnp.float32(0.6), temperature=jnp.float32(2.0), beta=jnp.float32(0.0))
  always = _value_and_grads(path, inputs, weights, None)
  by_flag = {flag: _value_and_grads(path, inputs, weights, flag) for flag in (True, False)}
  for flag, (total, count, metrics, grads) in by_flag.items():
    np.testing.assert_allclose(float(total), float(always[0]), rtol=1e-6)
    assert float(count) == float(always[1]) == MASK.sum()
    assert set(metrics) == set(always[2])
    for name, (value, tokens) in metrics.items():
      if name in metric_names.ONLINE_DIAGNOSTICS and not flag:
        assert (float(value), float(tokens)) == (0.0, 0.0), name
      else:
        np.testing.assert_allclose(float(value), float(always[2][name][0]), rtol=1e-6, atol=1e-6, err_msg=name)
        assert float(tokens) == float(always[2][name][1]) == MASK.sum(), name
    for got_grad, want_grad in zip(grads, always[3]):
      np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), rtol=1e-5, atol=1e-7)
  # A window of an undiagnosed and a diagnosed step averages the diagnostics over the diagnosed one alone.
  window = reductions.means(reductions.add_pairs(by_flag[False][2], by_flag[True][2]))
  for name in metric_names.ONLINE_DIAGNOSTICS:
    np.testing.assert_allclose(window[name], float(always[2][name][0]) / MASK.sum(), rtol=1e-6)
  assert 0.0 < window[metric_names.TOPK_COVERAGE] < 1.0


def test_the_step_diagnoses_the_last_step_of_each_logging_window():
  options = step_lib.StepOptions(settings=None, total_steps=11, diagnostics_every=4)
  due = [bool(step_lib.diagnostics_due(jnp.int32(step), options)) for step in range(11)]
  assert due == [step in (3, 7, 10) for step in range(11)]  # the trainer flushes after steps 3, 7 and the last
  assert step_lib.diagnostics_due(jnp.int32(5), step_lib.StepOptions(settings=None, total_steps=11)) is None
