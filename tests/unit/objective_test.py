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

"""Tests for maxtext_distill_plugin.loss.objective against a float64 NumPy reference of the whole objective."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import reductions
from tests import numpy_reference as ref

RTOL = 1e-5
ATOL = 1e-6
B, S, V = 3, 6, 11
L, D = 2, 8
# Ragged right padding plus one interior hole (as with packing); 11 valid tokens out of 18.
MASK = np.array(
    [
        [1, 1, 1, 1, 1, 1],
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 0, 0, 0],
    ],
    dtype=bool,
)
METRIC_NAMES = (
    "distill/soft_loss",
    "distill/hard_loss",
    "distill/teacher_loss",
    "distill/divergence_at_T",
    "distill/kl_div_at_T",
    "distill/kl_div_T1",
    "distill/out_proj_feature_loss",
    "distill/total_loss",
)
# Diagnostics, checked against NumPy in diagnostics_test.py; here only their presence.
DIAGNOSTIC_NAMES = ("distill/top1_agreement", "distill/teacher_entropy", "distill/student_entropy")
FEATURE_TYPES = (None, "cosine", "l2")


# ----------------------------------------------------------------------------- NumPy float64 reference


def _np_softmax(x):
  return np.exp(ref.log_softmax(x))


def _np_feature(student, teacher, loss_type):
  s = np.asarray(student, np.float64)
  t = np.asarray(teacher, np.float64)
  if loss_type == "cosine":
    per_layer = 1.0 - np.sum(s * t, -1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
  else:
    per_layer = np.mean((s - t) ** 2, -1)
  return per_layer.mean(0)


def _reference(inputs, alpha, temperature, beta, loss_type):
  """Sums over valid tokens of every term, the valid-token count and the per-token objective."""
  mask = np.asarray(inputs["mask"], bool)
  kl_t = ref.dense_divergence("forward_kl", inputs["teacher"], inputs["student"], temperature)
  kl_1 = ref.dense_divergence("forward_kl", inputs["teacher"], inputs["student"], 1.0)
  hard = ref.cross_entropy(inputs["student"], inputs["labels"])
  teacher_ce = ref.cross_entropy(inputs["teacher"], inputs["labels"])
  soft = kl_t * temperature**2
  if loss_type is None:
    feature = np.zeros_like(hard)
  else:
    feature = beta * _np_feature(inputs["student_features"], inputs["teacher_features"], loss_type)
  per_token = alpha * soft + (1.0 - alpha) * hard + feature
  count = float(mask.sum())
  sums = {
      "distill/soft_loss": soft[mask].sum(),
      "distill/hard_loss": hard[mask].sum(),
      "distill/teacher_loss": teacher_ce[mask].sum(),
      "distill/divergence_at_T": kl_t[mask].sum(),  # forward KL: the optimised divergence is the KL
      "distill/kl_div_at_T": kl_t[mask].sum(),
      "distill/kl_div_T1": kl_1[mask].sum(),
      "distill/out_proj_feature_loss": feature[mask].sum(),
      "distill/total_loss": per_token[mask].sum(),
  }
  return sums, count, per_token


def _np_logit_grad(inputs, alpha, temperature):
  """Analytic d(objective_sum / count) / d(student logits)."""
  mask = np.asarray(inputs["mask"], np.float64)
  student = np.asarray(inputs["student"], np.float64)
  teacher = np.asarray(inputs["teacher"], np.float64)
  onehot = np.eye(V, dtype=np.float64)[inputs["labels"]]
  d_soft = temperature**2 * (_np_softmax(student / temperature) - _np_softmax(teacher / temperature)) / temperature
  d_hard = _np_softmax(student) - onehot
  return (mask / mask.sum())[..., None] * (alpha * d_soft + (1.0 - alpha) * d_hard)


# ----------------------------------------------------------------------------- Helpers


def _inputs(seed, mask=MASK):
  rng = np.random.default_rng(seed)
  batch, seq = mask.shape
  return {
      "student": (2.0 * rng.standard_normal((batch, seq, V))).astype(np.float32),
      "teacher": (3.0 * rng.standard_normal((batch, seq, V))).astype(np.float32),
      "labels": rng.integers(0, V, size=(batch, seq)).astype(np.int32),
      "mask": mask.astype(np.int32),
      "student_features": rng.standard_normal((L, batch, seq, D)).astype(np.float32),
      "teacher_features": rng.standard_normal((L, batch, seq, D)).astype(np.float32),
  }


def _weights(alpha, temperature, beta):
  return objective.LossWeights(alpha=jnp.float32(alpha), temperature=jnp.float32(temperature), beta=jnp.float32(beta))


def _f32(x):
  """The float64 value of the float32 scalar the library actually sees."""
  return float(np.float32(x))


def _call(inputs, weights, loss_type, student_logits=None, fn=objective.distillation_terms):
  teacher = heads.TeacherLogits(
      logits_BxSxV=jnp.asarray(inputs["teacher"]),
      features_LxBxSxD=None if loss_type is None else jnp.asarray(inputs["teacher_features"]),
  )
  kwargs = {}
  if loss_type is not None:
    kwargs = {"student_features_LxBxSxD": jnp.asarray(inputs["student_features"]), "feature_loss_type": loss_type}
  logits = jnp.asarray(inputs["student"]) if student_logits is None else student_logits
  return fn(logits, teacher, jnp.asarray(inputs["labels"]), jnp.asarray(inputs["mask"]), weights, **kwargs)


def _assert_metrics_match(metrics, ref_sums, ref_count, loss_type=None):
  layers = {f"distill/out_proj_feature_loss/layer_{i}" for i in range(L)} if loss_type else set()
  assert set(metrics) == set(METRIC_NAMES) | set(DIAGNOSTIC_NAMES) | layers
  for name in METRIC_NAMES:
    total, count = metrics[name]
    np.testing.assert_allclose(float(total), ref_sums[name], rtol=RTOL, atol=ATOL, err_msg=name)
    assert float(count) == ref_count, name


def _slice(inputs, rows):
  out = {key: value[rows] for key, value in inputs.items() if key not in ("student_features", "teacher_features")}
  out["student_features"] = inputs["student_features"][:, rows]
  out["teacher_features"] = inputs["teacher_features"][:, rows]
  return out


# ----------------------------------------------------------------------------- Value tests


@pytest.mark.parametrize("loss_type", FEATURE_TYPES)
@pytest.mark.parametrize("alpha,temperature,beta", ((0.7, 2.0, 0.3), (0.25, 0.5, 1.5), (0.5, 4.0, 0.0)))
def test_matches_reference_with_padding(loss_type, alpha, temperature, beta):
  inputs = _inputs(0)
  total, count, metrics = _call(inputs, _weights(alpha, temperature, beta), loss_type)
  ref_sums, ref_count, _ = _reference(inputs, _f32(alpha), _f32(temperature), _f32(beta), loss_type)
  assert ref_count == 11.0
  assert total.shape == () and count.shape == ()
  np.testing.assert_allclose(float(total), ref_sums["distill/total_loss"], rtol=RTOL, atol=ATOL)
  assert float(count) == ref_count
  _assert_metrics_match(metrics, ref_sums, ref_count, loss_type)


@pytest.mark.parametrize("loss_type", FEATURE_TYPES)
def test_matches_reference_under_jit(loss_type):
  inputs = _inputs(1)
  fn = jax.jit(functools.partial(objective.distillation_terms, feature_loss_type=loss_type or "cosine"))
  teacher = heads.TeacherLogits(
      logits_BxSxV=jnp.asarray(inputs["teacher"]),
      features_LxBxSxD=None if loss_type is None else jnp.asarray(inputs["teacher_features"]),
  )
  student_features = None if loss_type is None else jnp.asarray(inputs["student_features"])
  total, count, metrics = fn(
      jnp.asarray(inputs["student"]),
      teacher,
      jnp.asarray(inputs["labels"]),
      jnp.asarray(inputs["mask"]),
      _weights(0.6, 1.5, 0.4),
      student_features_LxBxSxD=student_features,
  )
  ref_sums, ref_count, _ = _reference(inputs, _f32(0.6), _f32(1.5), _f32(0.4), loss_type)
  np.testing.assert_allclose(float(total), ref_sums["distill/total_loss"], rtol=RTOL, atol=ATOL)
  assert float(count) == ref_count
  _assert_metrics_match(metrics, ref_sums, ref_count, loss_type)


def test_features_ignored_unless_both_sides_given():
  inputs = _inputs(2)
  weights = _weights(0.5, 2.0, 0.8)
  no_teacher_features = heads.TeacherLogits(logits_BxSxV=jnp.asarray(inputs["teacher"]))
  total, _, metrics = objective.distillation_terms(
      jnp.asarray(inputs["student"]),
      no_teacher_features,
      jnp.asarray(inputs["labels"]),
      jnp.asarray(inputs["mask"]),
      weights,
      student_features_LxBxSxD=jnp.asarray(inputs["student_features"]),
  )
  ref_sums, _, _ = _reference(inputs, _f32(0.5), _f32(2.0), _f32(0.8), None)
  np.testing.assert_allclose(float(total), ref_sums["distill/total_loss"], rtol=RTOL, atol=ATOL)
  assert float(metrics["distill/out_proj_feature_loss"][0]) == 0.0


# ----------------------------------------------------------------------------- Limits


@pytest.mark.parametrize("loss_type", (None, "cosine"))
def test_alpha_zero_gives_hard_loss(loss_type):
  inputs = _inputs(3)
  total, _, metrics = _call(inputs, _weights(0.0, 2.0, 0.0), loss_type)
  np.testing.assert_allclose(float(total), float(metrics["distill/hard_loss"][0]), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(
      float(metrics["distill/total_loss"][0]), float(metrics["distill/hard_loss"][0]), rtol=RTOL, atol=ATOL
  )


@pytest.mark.parametrize("loss_type", (None, "l2"))
def test_alpha_one_beta_zero_gives_soft_loss(loss_type):
  inputs = _inputs(4)
  total, _, metrics = _call(inputs, _weights(1.0, 3.0, 0.0), loss_type)
  np.testing.assert_allclose(float(total), float(metrics["distill/soft_loss"][0]), rtol=RTOL, atol=ATOL)
  # soft = T^2 * KL_T.
  np.testing.assert_allclose(
      float(metrics["distill/soft_loss"][0]), 9.0 * float(metrics["distill/kl_div_at_T"][0]), rtol=RTOL, atol=ATOL
  )


def test_temperature_one_gives_equal_kl_metrics():
  inputs = _inputs(5)
  _, _, metrics = _call(inputs, _weights(0.5, 1.0, 0.0), None)
  np.testing.assert_allclose(
      float(metrics["distill/kl_div_at_T"][0]), float(metrics["distill/kl_div_T1"][0]), rtol=RTOL, atol=ATOL
  )
  np.testing.assert_allclose(
      float(metrics["distill/soft_loss"][0]), float(metrics["distill/kl_div_T1"][0]), rtol=RTOL, atol=ATOL
  )


@pytest.mark.parametrize("temperature", (0.5, 1.0, 2.0))
def test_identical_teacher_and_student_give_zero_kl(temperature):
  inputs = _inputs(6)
  inputs["teacher"] = inputs["student"].copy()
  _, _, metrics = _call(inputs, _weights(0.5, temperature, 0.0), None)
  for name in ("distill/soft_loss", "distill/kl_div_at_T", "distill/kl_div_T1"):
    np.testing.assert_allclose(float(metrics[name][0]), 0.0, rtol=0.0, atol=ATOL, err_msg=name)
  # Teacher and student then have the same cross-entropy.
  np.testing.assert_allclose(
      float(metrics["distill/teacher_loss"][0]), float(metrics["distill/hard_loss"][0]), rtol=RTOL, atol=ATOL
  )


@pytest.mark.parametrize("loss_type", ("cosine", "l2"))
def test_beta_zero_gives_zero_feature_metric(loss_type):
  inputs = _inputs(7)
  total, _, metrics = _call(inputs, _weights(0.5, 2.0, 0.0), loss_type)
  ref_sums, _, _ = _reference(inputs, _f32(0.5), _f32(2.0), 0.0, None)
  assert float(metrics["distill/out_proj_feature_loss"][0]) == 0.0
  np.testing.assert_allclose(float(total), ref_sums["distill/total_loss"], rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- Masking


@pytest.mark.parametrize("loss_type", FEATURE_TYPES)
def test_mask_equals_slice(loss_type):
  inputs = _inputs(8)
  weights = _weights(0.6, 2.0, 0.5)
  _, _, padded_metrics = _call(inputs, weights, loss_type)

  mask = MASK
  n_valid = int(mask.sum())
  sliced = {
      "student": inputs["student"][mask][None],
      "teacher": inputs["teacher"][mask][None],
      "labels": inputs["labels"][mask][None],
      "mask": np.ones((1, n_valid), np.int32),
      "student_features": inputs["student_features"][:, mask][:, None],
      "teacher_features": inputs["teacher_features"][:, mask][:, None],
  }
  _, _, sliced_metrics = _call(sliced, weights, loss_type)
  for name in METRIC_NAMES:
    np.testing.assert_allclose(
        float(padded_metrics[name][0]), float(sliced_metrics[name][0]), rtol=RTOL, atol=ATOL, err_msg=name
    )
    assert float(padded_metrics[name][1]) == float(sliced_metrics[name][1]) == n_valid


def test_non_finite_padded_logits_do_not_leak_into_values():
  inputs = _inputs(9)
  reference_sums, _, _ = _reference(inputs, _f32(0.6), _f32(2.0), _f32(0.5), "cosine")
  for key in ("student", "teacher"):
    inputs[key][~MASK] = np.nan
  inputs["labels"][~MASK] = 0
  total, count, metrics = _call(inputs, _weights(0.6, 2.0, 0.5), "cosine")
  np.testing.assert_allclose(float(total), reference_sums["distill/total_loss"], rtol=RTOL, atol=ATOL)
  assert float(count) == MASK.sum()
  for name in METRIC_NAMES:
    assert np.isfinite(float(metrics[name][0])), name


# ----------------------------------------------------------------------------- Gradients


def _mean_objective(student_logits, inputs, weights, loss_type):
  total, count, _ = _call(inputs, weights, loss_type, student_logits=student_logits)
  return total / count


def test_analytic_reference_gradient_matches_finite_differences():
  """Self-check of the NumPy analytic gradient used below, in float64."""
  inputs = _inputs(10)
  alpha, temperature = 0.7, 2.0
  want = _np_logit_grad(inputs, alpha, temperature)
  eps = 1e-6
  for index in ((0, 0, 0), (0, 5, 3), (1, 3, 10), (2, 1, 7), (1, 4, 1)):  # (1, 4) is padded.
    plus = {**inputs, "student": inputs["student"].astype(np.float64)}
    minus = {**inputs, "student": inputs["student"].astype(np.float64)}
    plus["student"][index] += eps
    minus["student"][index] -= eps
    sums_p, count, _ = _reference(plus, alpha, temperature, 0.0, None)
    sums_m, _, _ = _reference(minus, alpha, temperature, 0.0, None)
    fd = (sums_p["distill/total_loss"] - sums_m["distill/total_loss"]) / (2 * eps * count)
    np.testing.assert_allclose(want[index], fd, rtol=1e-6, atol=1e-9, err_msg=str(index))


@pytest.mark.parametrize("loss_type", FEATURE_TYPES)
@pytest.mark.parametrize("alpha,temperature", ((0.7, 2.0), (0.2, 0.5)))
def test_logit_gradient_matches_analytic(loss_type, alpha, temperature):
  inputs = _inputs(11)
  weights = _weights(alpha, temperature, 0.5)
  got = jax.grad(_mean_objective)(jnp.asarray(inputs["student"]), inputs, weights, loss_type)
  want = _np_logit_grad(inputs, _f32(alpha), _f32(temperature))
  np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("loss_type", ("cosine", "l2"))
def test_feature_gradient_matches_finite_differences(loss_type):
  inputs = _inputs(12)
  weights = _weights(0.5, 2.0, 0.7)

  def mean_objective(student_features):
    teacher = heads.TeacherLogits(
        logits_BxSxV=jnp.asarray(inputs["teacher"]), features_LxBxSxD=jnp.asarray(inputs["teacher_features"])
    )
    total, count, _ = objective.distillation_terms(
        jnp.asarray(inputs["student"]),
        teacher,
        jnp.asarray(inputs["labels"]),
        jnp.asarray(inputs["mask"]),
        weights,
        student_features_LxBxSxD=student_features,
        feature_loss_type=loss_type,
    )
    return total / count

  got = np.asarray(jax.grad(mean_objective)(jnp.asarray(inputs["student_features"])))
  eps = 1e-6
  for index in ((0, 0, 0, 0), (1, 0, 5, 7), (0, 2, 1, 3), (1, 1, 3, 2), (0, 1, 2, 4)):  # (.., 1, 2, ..) is padded.
    plus = {**inputs, "student_features": inputs["student_features"].astype(np.float64)}
    minus = {**inputs, "student_features": inputs["student_features"].astype(np.float64)}
    plus["student_features"][index] += eps
    minus["student_features"][index] -= eps
    sums_p, count, _ = _reference(plus, 0.5, 2.0, _f32(0.7), loss_type)
    sums_m, _, _ = _reference(minus, 0.5, 2.0, _f32(0.7), loss_type)
    fd = (sums_p["distill/total_loss"] - sums_m["distill/total_loss"]) / (2 * eps * count)
    np.testing.assert_allclose(got[index], fd, rtol=RTOL, atol=ATOL, err_msg=str(index))
  # Padded tokens get no feature gradient.
  assert np.all(got[:, ~MASK] == 0.0)


@pytest.mark.parametrize("loss_type", FEATURE_TYPES)
def test_padded_positions_have_zero_gradient(loss_type):
  inputs = _inputs(13)
  got = np.asarray(jax.grad(_mean_objective)(jnp.asarray(inputs["student"]), inputs, _weights(0.5, 2.0, 0.5), loss_type))
  assert np.all(got[~MASK] == 0.0)
  assert np.all(np.abs(got[MASK]).max(axis=-1) > 0.0)


@pytest.mark.parametrize("loss_type", FEATURE_TYPES)
def test_split_batch_accumulation_equals_full_batch(loss_type):
  """Gradient accumulation: summing (sum, count) and sum-gradients over micro-batches gives the full batch."""
  inputs = _inputs(14)
  weights = _weights(0.6, 2.0, 0.4)

  def sum_objective(student_logits, batch):
    total, _, _ = _call(batch, weights, loss_type, student_logits=student_logits)
    return total

  full_total, full_count, full_metrics = _call(inputs, weights, loss_type)
  full_grad = np.asarray(jax.grad(_mean_objective)(jnp.asarray(inputs["student"]), inputs, weights, loss_type))

  totals, counts, metrics, sum_grads = 0.0, 0.0, None, []
  for rows in (slice(0, 1), slice(1, B)):  # Uneven halves: 6 and 5 valid tokens.
    part = _slice(inputs, rows)
    total, count, part_metrics = _call(part, weights, loss_type)
    totals, counts = totals + total, counts + count
    metrics = part_metrics if metrics is None else reductions.add_pairs(metrics, part_metrics)
    sum_grads.append(np.asarray(jax.grad(sum_objective)(jnp.asarray(part["student"]), part)))

  np.testing.assert_allclose(float(totals), float(full_total), rtol=RTOL, atol=ATOL)
  assert float(counts) == float(full_count)
  for name in METRIC_NAMES:
    np.testing.assert_allclose(float(metrics[name][0]), float(full_metrics[name][0]), rtol=RTOL, atol=ATOL, err_msg=name)
    assert float(metrics[name][1]) == float(full_metrics[name][1])
  accumulated_grad = np.concatenate(sum_grads, axis=0) / float(counts)
  np.testing.assert_allclose(accumulated_grad, full_grad, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- Schedule and derived metrics


def test_schedule_metrics():
  metrics = objective.schedule_metrics(_weights(0.25, 2.0, 0.5))
  assert set(metrics) == {"distill/alpha", "distill/temperature", "distill/beta_feature"}
  for name, value in (("distill/alpha", 0.25), ("distill/temperature", 2.0), ("distill/beta_feature", 0.5)):
    total, count = metrics[name]
    assert float(total) == value and float(count) == 1.0, name
  # Averaged over two steps like any other metric.
  summed = reductions.add_pairs(metrics, objective.schedule_metrics(_weights(0.75, 1.0, 0.0)))
  np.testing.assert_allclose(reductions.means(summed)["distill/alpha"], 0.5, rtol=RTOL)
  np.testing.assert_allclose(reductions.means(summed)["distill/temperature"], 1.5, rtol=RTOL)


def test_schedule_metrics_under_jit():
  metrics = jax.jit(objective.schedule_metrics)(_weights(0.3, 1.5, 0.1))
  np.testing.assert_allclose(reductions.means(metrics)["distill/temperature"], 1.5, rtol=RTOL)


def test_derived_metrics_perplexity():
  inputs = _inputs(15)
  _, _, metrics = _call(inputs, _weights(0.5, 2.0, 0.0), None)
  ref_sums, ref_count, _ = _reference(inputs, 0.5, _f32(2.0), 0.0, None)
  derived = objective.derived_metrics(reductions.means(metrics))
  assert set(derived) == {"distill/student_perplexity"}
  np.testing.assert_allclose(
      derived["distill/student_perplexity"], math.exp(ref_sums["distill/hard_loss"] / ref_count), rtol=RTOL
  )


def test_derived_metrics_edge_cases():
  assert not objective.derived_metrics({})
  assert not objective.derived_metrics({"distill/soft_loss": 1.0})
  assert objective.derived_metrics({"distill/hard_loss": 0.0}) == {"distill/student_perplexity": 1.0}
  np.testing.assert_allclose(
      objective.derived_metrics({"distill/hard_loss": math.log(11.0)})["distill/student_perplexity"], 11.0, rtol=1e-12
  )
  # A diverged run must not crash logging with an OverflowError.
  huge = objective.derived_metrics({"distill/hard_loss": 1e4})["distill/student_perplexity"]
  assert math.isfinite(huge)
