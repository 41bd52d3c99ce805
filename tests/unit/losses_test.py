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

"""Tests for maxtext_distill_plugin.loss.losses against independent float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import losses
from tests import numpy_reference as ref

RTOL = 1e-5
ATOL = 1e-6
B, S, V = 3, 5, 13
L, D = 2, 8
TEMPERATURES = (0.5, 1.0, 2.0, 4.0)


def _kl_divergence(teacher_logits, student_logits, *, temperature=1.0):
  """``KL(softmax(t/T) || softmax(s/T))`` per token as the dense objective forms it from the package's functions."""
  return losses.kl_from_log_probs(
      losses.log_softmax_at(teacher_logits, temperature), losses.log_softmax_at(student_logits, temperature)
  )


# ----------------------------------------------------------------------------- NumPy float64 references


def _np_softmax(x):
  return np.exp(ref.log_softmax(x))


def _np_cosine_distance(student, teacher):
  s = np.asarray(student, np.float64)
  t = np.asarray(teacher, np.float64)
  cos = np.sum(s * t, -1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
  return np.mean(1.0 - cos, axis=0)


def _np_l2_distance(student, teacher):
  diff = np.asarray(student, np.float64) - np.asarray(teacher, np.float64)
  return np.mean(np.mean(diff**2, -1), axis=0)


def _logits(rng, shape=(B, S, V), scale=3.0):
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def _labels(rng, shape=(B, S), vocab=V):
  return rng.integers(0, vocab, size=shape).astype(np.int32)


def _features(rng, shape=(L, B, S, D)):
  return rng.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- KL divergence


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_kl_matches_reference(temperature):
  rng = np.random.default_rng(0)
  teacher, student = _logits(rng), _logits(rng)
  got = _kl_divergence(jnp.asarray(teacher), jnp.asarray(student), temperature=temperature)
  assert got.shape == (B, S)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(
      np.asarray(got), ref.dense_divergence("forward_kl", teacher, student, temperature), rtol=RTOL, atol=ATOL
  )


def test_kl_default_temperature_is_one():
  rng = np.random.default_rng(1)
  teacher, student = _logits(rng), _logits(rng)
  got = _kl_divergence(jnp.asarray(teacher), jnp.asarray(student))
  np.testing.assert_allclose(
      np.asarray(got), ref.dense_divergence("forward_kl", teacher, student, 1.0), rtol=RTOL, atol=ATOL
  )


def test_kl_under_jit_with_traced_temperature():
  rng = np.random.default_rng(2)
  teacher, student = _logits(rng), _logits(rng)
  fn = jax.jit(lambda t, s, temp: _kl_divergence(t, s, temperature=temp))
  for temperature in TEMPERATURES:
    got = fn(jnp.asarray(teacher), jnp.asarray(student), jnp.float32(temperature))
    np.testing.assert_allclose(
        np.asarray(got), ref.dense_divergence("forward_kl", teacher, student, temperature), rtol=RTOL, atol=ATOL
    )


def test_kl_from_log_probs_matches_reference():
  rng = np.random.default_rng(3)
  teacher, student = _logits(rng), _logits(rng)
  got = losses.kl_from_log_probs(
      jnp.asarray(ref.log_softmax(teacher), jnp.float32), jnp.asarray(ref.log_softmax(student), jnp.float32)
  )
  np.testing.assert_allclose(
      np.asarray(got), ref.dense_divergence("forward_kl", teacher, student, 1.0), rtol=RTOL, atol=ATOL
  )


@pytest.mark.parametrize("temperature", (0.5, 1.0, 3.0))
def test_kl_gradient_matches_analytic(temperature):
  rng = np.random.default_rng(4)
  teacher, student = _logits(rng), _logits(rng)
  # A random per-token weight also checks that no gradient leaks across tokens.
  weights = rng.uniform(0.5, 2.0, size=(B, S)).astype(np.float32)

  def objective(s):
    return jnp.sum(jnp.asarray(weights) * _kl_divergence(jnp.asarray(teacher), s, temperature=temperature))

  got = jax.grad(objective)(jnp.asarray(student))
  want = (_np_softmax(student / temperature) - _np_softmax(teacher / temperature)) / temperature
  want = weights.astype(np.float64)[..., None] * want
  np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


def test_kl_identical_logits_is_zero():
  rng = np.random.default_rng(5)
  logits = jnp.asarray(_logits(rng))
  for temperature in TEMPERATURES:
    np.testing.assert_allclose(
        np.asarray(_kl_divergence(logits, logits, temperature=temperature)), 0.0, rtol=0.0, atol=ATOL
    )
  # Logits that differ by a per-token constant give the same distribution.
  shift = jnp.asarray(rng.standard_normal((B, S, 1)).astype(np.float32))
  np.testing.assert_allclose(np.asarray(_kl_divergence(logits, logits + shift)), 0.0, rtol=0.0, atol=ATOL)


@pytest.mark.parametrize("scale", (0.1, 1.0, 5.0, 20.0))
def test_kl_is_non_negative(scale):
  rng = np.random.default_rng(6)
  teacher, student = _logits(rng, scale=scale), _logits(rng, scale=scale)
  for temperature in TEMPERATURES:
    got = np.asarray(_kl_divergence(jnp.asarray(teacher), jnp.asarray(student), temperature=temperature))
    assert np.all(np.isfinite(got))
    assert np.all(got >= 0.0), got.min()


def test_kl_teacher_zero_probability_entries_contribute_zero():
  rng = np.random.default_rng(7)
  teacher, student = _logits(rng), _logits(rng)
  teacher[..., :3] = -np.inf  # The teacher forbids three tokens everywhere.
  got = _kl_divergence(jnp.asarray(teacher), jnp.asarray(student), temperature=2.0)
  assert np.all(np.isfinite(np.asarray(got)))
  np.testing.assert_allclose(
      np.asarray(got), ref.dense_divergence("forward_kl", teacher, student, 2.0), rtol=RTOL, atol=ATOL
  )
  grad = jax.grad(lambda s: jnp.sum(_kl_divergence(jnp.asarray(teacher), s, temperature=2.0)))(jnp.asarray(student))
  assert np.all(np.isfinite(np.asarray(grad)))


# ----------------------------------------------------------------------------- Cross-entropy


def test_cross_entropy_matches_reference():
  rng = np.random.default_rng(10)
  logits, labels = _logits(rng), _labels(rng)
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  assert got.shape == (B, S)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), ref.cross_entropy(logits, labels), rtol=RTOL, atol=ATOL)
  assert np.all(np.asarray(got) >= 0.0)


def test_cross_entropy_from_log_probs_matches_reference():
  rng = np.random.default_rng(11)
  logits, labels = _logits(rng), _labels(rng)
  got = losses.cross_entropy_from_log_probs(jnp.asarray(ref.log_softmax(logits), jnp.float32), jnp.asarray(labels))
  np.testing.assert_allclose(np.asarray(got), ref.cross_entropy(logits, labels), rtol=RTOL, atol=ATOL)


def test_cross_entropy_under_jit():
  rng = np.random.default_rng(12)
  logits, labels = _logits(rng), _labels(rng)
  got = jax.jit(losses.cross_entropy)(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(np.asarray(got), ref.cross_entropy(logits, labels), rtol=RTOL, atol=ATOL)


def test_cross_entropy_gradient_matches_analytic():
  rng = np.random.default_rng(13)
  logits, labels = _logits(rng), _labels(rng)
  weights = rng.uniform(0.5, 2.0, size=(B, S)).astype(np.float32)

  def objective(z):
    return jnp.sum(jnp.asarray(weights) * losses.cross_entropy(z, jnp.asarray(labels)))

  got = jax.grad(objective)(jnp.asarray(logits))
  onehot = np.eye(V, dtype=np.float64)[labels]
  want = weights.astype(np.float64)[..., None] * (_np_softmax(logits) - onehot)
  np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


def test_cross_entropy_large_logits_is_stable():
  logits = np.zeros((1, 2, V), np.float32)
  logits[0, 0, 4] = 1e4
  logits[0, 1, 4] = -1e4
  labels = np.array([[4, 0]], np.int32)
  got = np.asarray(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, ref.cross_entropy(logits, labels), rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- bf16 inputs


def test_bf16_inputs_give_finite_float32_results():
  rng = np.random.default_rng(20)
  teacher = jnp.asarray(_logits(rng, scale=30.0), jnp.bfloat16)
  student = jnp.asarray(_logits(rng, scale=30.0), jnp.bfloat16)
  labels = _labels(rng)
  # The library promotes to float32, so the reference on the bf16-rounded values uses the same tolerance.
  teacher_f64 = np.asarray(teacher.astype(jnp.float32), np.float64)
  student_f64 = np.asarray(student.astype(jnp.float32), np.float64)
  kl = _kl_divergence(teacher, student, temperature=jnp.float32(2.0))
  ce = losses.cross_entropy(student, jnp.asarray(labels))
  for got in (kl, ce):
    assert got.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(got)))
  np.testing.assert_allclose(
      np.asarray(kl), ref.dense_divergence("forward_kl", teacher_f64, student_f64, 2.0), rtol=RTOL, atol=ATOL
  )
  np.testing.assert_allclose(np.asarray(ce), ref.cross_entropy(student_f64, labels), rtol=RTOL, atol=ATOL)

  s_feat = jnp.asarray(_features(rng), jnp.bfloat16)
  t_feat = jnp.asarray(_features(rng), jnp.bfloat16)
  s_f64 = np.asarray(s_feat.astype(jnp.float32), np.float64)
  t_f64 = np.asarray(t_feat.astype(jnp.float32), np.float64)
  cos = losses.feature_distance(s_feat, t_feat, loss_type="cosine")
  l2 = losses.feature_distance(s_feat, t_feat, loss_type="l2")
  for got in (cos, l2):
    assert got.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(got)))
  np.testing.assert_allclose(np.asarray(cos), _np_cosine_distance(s_f64, t_f64), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(np.asarray(l2), _np_l2_distance(s_f64, t_f64), rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- Feature distance


@pytest.mark.parametrize("num_layers", (1, 3))
@pytest.mark.parametrize("scale", (1e-2, 1.0, 1e2))
def test_cosine_distance_matches_reference(num_layers, scale):
  rng = np.random.default_rng(30)
  student = scale * _features(rng, (num_layers, B, S, D))
  teacher = scale * _features(rng, (num_layers, B, S, D))
  got = losses.feature_distance(jnp.asarray(student), jnp.asarray(teacher), loss_type="cosine")
  assert got.shape == (B, S)
  np.testing.assert_allclose(np.asarray(got), _np_cosine_distance(student, teacher), rtol=RTOL, atol=ATOL)


def test_cosine_is_the_default_feature_loss():
  rng = np.random.default_rng(31)
  student, teacher = _features(rng), _features(rng)
  got = losses.feature_distance(jnp.asarray(student), jnp.asarray(teacher))
  np.testing.assert_allclose(np.asarray(got), _np_cosine_distance(student, teacher), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("num_layers", (1, 3))
def test_l2_distance_matches_reference(num_layers):
  rng = np.random.default_rng(32)
  student, teacher = _features(rng, (num_layers, B, S, D)), _features(rng, (num_layers, B, S, D))
  got = losses.feature_distance(jnp.asarray(student), jnp.asarray(teacher), loss_type="l2")
  assert got.shape == (B, S)
  np.testing.assert_allclose(np.asarray(got), _np_l2_distance(student, teacher), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("loss_type", ("cosine", "l2"))
def test_feature_distance_under_jit(loss_type):
  rng = np.random.default_rng(33)
  student, teacher = _features(rng), _features(rng)
  reference = _np_cosine_distance if loss_type == "cosine" else _np_l2_distance
  fn = jax.jit(lambda s, t: losses.feature_distance(s, t, loss_type=loss_type))
  np.testing.assert_allclose(
      np.asarray(fn(jnp.asarray(student), jnp.asarray(teacher))), reference(student, teacher), rtol=RTOL, atol=ATOL
  )


def test_feature_distance_identical_features_is_zero():
  rng = np.random.default_rng(34)
  features = jnp.asarray(_features(rng))
  np.testing.assert_allclose(np.asarray(losses.feature_distance(features, features, loss_type="l2")), 0.0, atol=ATOL)
  np.testing.assert_allclose(np.asarray(losses.feature_distance(features, features, loss_type="cosine")), 0.0, atol=ATOL)


def test_cosine_distance_is_in_zero_two():
  rng = np.random.default_rng(35)
  student = _features(rng)
  teacher = _features(rng)
  random = np.asarray(losses.feature_distance(jnp.asarray(student), jnp.asarray(teacher), loss_type="cosine"))
  aligned = np.asarray(losses.feature_distance(jnp.asarray(student), jnp.asarray(3.0 * student), loss_type="cosine"))
  opposite = np.asarray(losses.feature_distance(jnp.asarray(student), jnp.asarray(-student), loss_type="cosine"))
  for got in (random, aligned, opposite):
    assert np.all(got >= 0.0 - ATOL) and np.all(got <= 2.0 + ATOL), (got.min(), got.max())
  np.testing.assert_allclose(aligned, 0.0, atol=ATOL)  # Scale-invariant: only the direction counts.
  np.testing.assert_allclose(opposite, 2.0, rtol=RTOL, atol=ATOL)


def test_cosine_distance_zero_vector_is_finite():
  rng = np.random.default_rng(36)
  teacher = _features(rng)
  student = np.zeros_like(teacher)
  got = np.asarray(losses.feature_distance(jnp.asarray(student), jnp.asarray(teacher), loss_type="cosine"))
  np.testing.assert_allclose(got, 1.0, rtol=RTOL, atol=ATOL)


def test_cosine_distance_gradient_is_finite_at_zero_vector():
  rng = np.random.default_rng(37)
  teacher = jnp.asarray(_features(rng))
  student = _features(rng)
  student[:, 0, 0, :] = 0.0
  grad = jax.grad(lambda s: jnp.sum(losses.feature_distance(s, teacher, loss_type="cosine")))(jnp.asarray(student))
  assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize(
    "student_shape,teacher_shape",
    (((L, B, S, D), (L, B, S, D + 1)), ((L, B, S, D), (L + 1, B, S, D)), ((L, B, S, D), (B, S, D))),
)
@pytest.mark.parametrize("loss_type", ("cosine", "l2"))
def test_feature_distance_rejects_shape_mismatch(student_shape, teacher_shape, loss_type):
  with pytest.raises(ValueError):
    losses.feature_distance(jnp.zeros(student_shape), jnp.ones(teacher_shape), loss_type=loss_type)


@pytest.mark.parametrize("loss_type", ("l1", "Cosine", "mse", ""))
def test_feature_distance_rejects_unknown_type(loss_type):
  with pytest.raises(ValueError):
    losses.feature_distance(jnp.ones((L, B, S, D)), jnp.ones((L, B, S, D)), loss_type=loss_type)
