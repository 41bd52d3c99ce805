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


"""Upstream MaxText's metric contract: the names and scalings its own distillation tests fix, as the plugin logs them.

MaxText's ``distillation_metrics_test.py`` and ``train_distill_test.py`` (run by ``make test-upstream``) fix what a
user reads from a run: the logged names (soft, hard, teacher and feature losses, both KLs, the MoE load-balance terms,
the schedules), ``(sum, count)`` token-weighted pairs aggregated as ``sum(sums) / sum(counts)``, ``soft_loss`` as
``T^2`` times the KL at ``T``, ``out_proj_feature_loss`` already times beta, ``teacher_loss`` as the teacher's CE.
Here one logged step of the plugin (objective -> MaxText terms -> logger) is checked against a float64 NumPy
statement of those definitions.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import aux_terms
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.training import metrics_logger

# What MaxText's trainer logs every step, for any model (its train_distill_test lists the first eleven).
UPSTREAM_STEP_METRICS = (
    "distill/soft_loss",
    "distill/hard_loss",
    "distill/kl_div_at_T",
    "distill/kl_div_T1",
    "distill/teacher_loss",
    "distill/out_proj_feature_loss",
    "distill/moe_lb_loss",
    "distill/total_loss",
    "distill/temperature",
    "distill/alpha",
    "distill/beta_feature",
    "distill/student_perplexity",
    "distill/teacher_perplexity",
    "distill/teacher_moe_lb_loss",
)
ALPHA, TEMPERATURE, BETA = 0.3, 2.0, 0.5
L, B, S, D, V = 2, 2, 5, 6, 7
MASK = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=bool)  # 6 valid tokens, ragged padding


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {
      "student": rng.normal(size=(B, S, V)).astype(np.float32) * 2.0,
      "teacher": rng.normal(size=(B, S, V)).astype(np.float32) * 3.0,
      "labels": rng.integers(0, V, size=(B, S)).astype(np.int32),
      "student_features": rng.normal(size=(L, B, S, D)).astype(np.float32),
      "teacher_features": rng.normal(size=(L, B, S, D)).astype(np.float32),
  }


def _log_softmax64(x, temperature=1.0):
  z = np.asarray(x, np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _upstream_reference(batch, moe_lb=0.0, teacher_moe_lb=0.0) -> dict[str, float]:
  """One step's logged values under MaxText's definitions, in float64."""
  n = MASK.sum()

  def token_mean(per_token):
    return float(np.sum(np.where(MASK, per_token, 0.0)) / n)

  def kl(temperature):
    t, s = _log_softmax64(batch["teacher"], temperature), _log_softmax64(batch["student"], temperature)
    return np.sum(np.exp(t) * (t - s), -1)

  def ce(logits):
    return -np.take_along_axis(_log_softmax64(logits), batch["labels"][..., None], -1)[..., 0]

  s64, t64 = (np.asarray(batch[k], np.float64) for k in ("student_features", "teacher_features"))
  cosine = np.sum(s64 * t64, -1) / (np.linalg.norm(s64, axis=-1) * np.linalg.norm(t64, axis=-1))
  # Mean of (1 - cos) over the selected layers and the valid tokens, times beta.
  feature = BETA * float(np.sum(np.where(MASK[None], 1.0 - cosine, 0.0)) / (n * L))
  soft = TEMPERATURE**2 * token_mean(kl(TEMPERATURE))
  hard, teacher = token_mean(ce(batch["student"])), token_mean(ce(batch["teacher"]))
  return {
      "distill/soft_loss": soft,
      "distill/hard_loss": hard,
      "distill/kl_div_at_T": token_mean(kl(TEMPERATURE)),
      "distill/kl_div_T1": token_mean(kl(1.0)),
      "distill/teacher_loss": teacher,
      "distill/out_proj_feature_loss": feature,
      "distill/moe_lb_loss": moe_lb,
      "distill/teacher_moe_lb_loss": teacher_moe_lb,
      "distill/total_loss": ALPHA * soft + (1 - ALPHA) * hard + feature + moe_lb,
      "distill/temperature": TEMPERATURE,
      "distill/alpha": ALPHA,
      "distill/beta_feature": BETA,
      "distill/student_perplexity": math.exp(hard),
      "distill/teacher_perplexity": math.exp(teacher),
  }


def _step_metrics(batch, moe_lb=None, teacher_moe_lb=None):
  """The plugin's metrics of one online step: the objective, then MaxText's scalar terms, then the schedules."""
  weights = objective.LossWeights(jnp.float32(ALPHA), jnp.float32(TEMPERATURE), jnp.float32(BETA))
  teacher = heads.TeacherLogits(
      logits_BxSxV=jnp.asarray(batch["teacher"]), features_LxBxSxD=jnp.asarray(batch["teacher_features"])
  )
  total, count, metrics = objective.distillation_terms(
      jnp.asarray(batch["student"]),
      teacher,
      jnp.asarray(batch["labels"]),
      jnp.asarray(MASK),
      weights,
      student_features_LxBxSxD=jnp.asarray(batch["student_features"]),
  )
  as_array = lambda x: None if x is None else jnp.float32(x)  # pylint: disable=unnecessary-lambda-assignment
  _, _, metrics = aux_terms.add_aux_terms(
      total, count, metrics, moe_lb_loss=as_array(moe_lb), teacher_moe_lb_loss=as_array(teacher_moe_lb)
  )
  return {**metrics, **objective.schedule_metrics(weights)}


def _logged(*steps) -> dict[str, float]:
  logger = metrics_logger.MetricsLogger(None, total_steps=10)
  for step in steps:
    logger.add(step)
  return logger.flush(len(steps) - 1)


def test_a_dense_step_logs_every_name_maxtexts_trainer_logs():
  """A model without experts logs the load-balance terms as 0, as MaxText does, so dashboards find every series."""
  logged = _logged(_step_metrics(_batch(0)))
  missing = [name for name in UPSTREAM_STEP_METRICS if name not in logged]
  assert not missing
  assert logged["distill/moe_lb_loss"] == 0.0 and logged["distill/teacher_moe_lb_loss"] == 0.0


@pytest.mark.parametrize("moe_lb,teacher_moe_lb", ((None, None), (0.125, 0.25)))
def test_logged_values_follow_maxtexts_definitions(moe_lb, teacher_moe_lb):
  """soft = T^2 KL_T, feature already times beta, teacher_loss the teacher's CE, total with the MoE term."""
  batch = _batch(1)
  logged = _logged(_step_metrics(batch, moe_lb, teacher_moe_lb))
  reference = _upstream_reference(batch, moe_lb or 0.0, teacher_moe_lb or 0.0)
  for name, value in reference.items():
    np.testing.assert_allclose(logged[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
  assert logged["distill/soft_loss"] == pytest.approx(TEMPERATURE**2 * logged["distill/kl_div_at_T"], rel=1e-6)


def test_feature_loss_is_beta_scaled():
  batch = _batch(2)
  logged = _logged(_step_metrics(batch))
  per_layer = [logged[f"distill/out_proj_feature_loss/layer_{i}"] for i in range(L)]
  np.testing.assert_allclose(logged["distill/out_proj_feature_loss"], BETA * np.mean(per_layer), rtol=1e-6)


def test_window_is_token_weighted_sum_over_sum():
  """Steps holding 8, 1, 4 and 4 valid tokens (per-step means 1, 5, 2, 2): the window is 29 / 17, not 2.5."""
  steps = []
  for total, count in ((8.0, 8.0), (5.0, 1.0), (8.0, 4.0), (8.0, 4.0)):
    pair = (jnp.float32(total), jnp.float32(count))
    steps.append({"distill/hard_loss": pair, "distill/total_loss": pair})
  logged = _logged(*steps)
  np.testing.assert_allclose(logged["distill/hard_loss"], 29.0 / 17.0, rtol=1e-6)
  np.testing.assert_allclose(logged["distill/student_perplexity"], math.exp(29.0 / 17.0), rtol=1e-6)
