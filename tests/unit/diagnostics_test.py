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

"""The loss diagnostics (top-1 agreement, entropies, top-k coverage, per-layer feature loss) against NumPy.

In the dense online, dense offline and lean offline paths: token-weighted (sum, count) over the valid
tokens, and no gradient through any of them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import chunked_sparse
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from tests import numpy_reference as ref

B, S, D, V, K, L, F = 2, 5, 6, 13, 4, 2, 8
SOFTCAP = 3.0
RTOL, ATOL = 1e-5, 1e-5
MASK = np.array([[1, 1, 1, 1, 0], [1, 0, 1, 1, 1]], dtype=bool)
DIAGNOSTICS = ("distill/top1_agreement", "distill/teacher_entropy", "distill/student_entropy", "distill/topk_coverage")


def _data(seed=0):
  """A student close enough to its teacher that their argmax agrees on some tokens and not on others."""
  rng = np.random.default_rng(seed)
  hidden = rng.standard_normal((B, S, D)).astype(np.float32)
  unembed = (2.0 * rng.standard_normal((D, V)) / np.sqrt(D)).astype(np.float32)
  student_logits = hidden.astype(np.float64) @ unembed.astype(np.float64)
  teacher_logits = 1.3 * student_logits + 0.8 * rng.standard_normal((B, S, V))
  features = rng.standard_normal((2, L, B, S, F)).astype(np.float32)
  return {
      "hidden": hidden,
      "unembed": unembed,
      "teacher": teacher_logits,
      "labels": rng.integers(0, V, size=(B, S)).astype(np.int32),
      "student_features": features[0],
      "teacher_features": features[1],
  }


def _weights():
  return objective.LossWeights(alpha=jnp.float32(0.5), temperature=jnp.float32(2.0), beta=jnp.float32(0.5))


def _cached(data, tail, with_features=False):
  ids, logprobs, tail_logmass = ref.topk_cache(data["teacher"], K)
  return heads.CachedTopK(
      features_LxBxSxD=jnp.asarray(data["teacher_features"]) if with_features else None,
      topk_ids_BxSxK=jnp.asarray(ids, jnp.int32),
      topk_logprobs_BxSxK=jnp.asarray(logprobs, jnp.float32),
      tail_logmass_BxS=jnp.asarray(tail_logmass, jnp.float32),
      tail=tail,
  )


def _sums(values):
  return values[MASK].sum()


def _reference(data, student_logits, offline):
  """Sums over the valid tokens of every diagnostic, float64."""
  teacher_logp = ref.log_softmax(data["teacher"])
  if offline:  # the teacher's k+1 buckets at T = 1, as far as a cache knows it
    _, logprobs, tail = ref.topk_cache(data["teacher"], K)
    teacher_entropy = ref.entropy(ref.teacher_buckets(logprobs, tail, 1.0, V))
  else:
    teacher_entropy = ref.entropy(teacher_logp)
  agreement = ref.top1_agreement(np.argmax(data["teacher"], axis=-1), student_logits)
  assert 0 < _sums(agreement) < MASK.sum()  # both outcomes occur
  return {
      "distill/top1_agreement": _sums(agreement),
      "distill/teacher_entropy": _sums(teacher_entropy),
      "distill/student_entropy": _sums(ref.entropy(ref.log_softmax(student_logits))),
      "distill/topk_coverage": _sums(ref.topk_mass(data["teacher"], K)),
  }


def _assert_diagnostics(metrics, want):
  for name in DIAGNOSTICS:
    total, count = metrics[name]
    assert float(count) == MASK.sum(), name
    np.testing.assert_allclose(float(total), want[name], rtol=RTOL, atol=ATOL, err_msg=name)


def _dense_online(data, logits, **kwargs):
  teacher = heads.TeacherLogits(logits_BxSxV=jnp.asarray(data["teacher"], jnp.float32))
  return objective.distillation_terms(
      logits, teacher, jnp.asarray(data["labels"]), jnp.asarray(MASK), _weights(), **kwargs
  )


def test_dense_online_diagnostics():
  data = _data()
  logits = jnp.asarray(data["hidden"]) @ jnp.asarray(data["unembed"])
  _, _, metrics = _dense_online(data, logits, top_k=K, divergence="jsd")
  _assert_diagnostics(metrics, _reference(data, np.asarray(logits, np.float64), offline=False))
  # k clips to V: a cache of the whole vocabulary keeps all of the mass.
  _, _, metrics = _dense_online(data, logits, top_k=10 * V)
  np.testing.assert_allclose(float(metrics["distill/topk_coverage"][0]), MASK.sum(), rtol=RTOL)
  # Without k there is no online coverage.
  assert "distill/topk_coverage" not in _dense_online(data, logits)[2]


@pytest.mark.parametrize("tail", ("bucket", "renormalize"))
def test_dense_offline_diagnostics(tail):
  data = _data(1)
  logits = jnp.asarray(data["hidden"]) @ jnp.asarray(data["unembed"])
  _, _, metrics = objective.distillation_terms(
      logits, _cached(data, tail), jnp.asarray(data["labels"]), jnp.asarray(MASK), _weights(), divergence="tvd"
  )
  _assert_diagnostics(metrics, _reference(data, np.asarray(logits, np.float64), offline=True))


@pytest.mark.parametrize("tail", ("bucket", "renormalize"))
def test_lean_offline_diagnostics(tail):
  data = _data(2)
  _, _, metrics = chunked_sparse.offline_distillation_terms_from_hidden(
      jnp.asarray(data["hidden"]),
      jnp.asarray(data["unembed"]),
      _cached(data, tail),
      jnp.asarray(data["labels"]),
      jnp.asarray(MASK),
      _weights(),
      seq_chunk=2,
      vocab_chunk=5,
      student_logit_softcap=SOFTCAP,
      divergence="reverse_kl",
  )
  capped = SOFTCAP * np.tanh(data["hidden"].astype(np.float64) @ data["unembed"].astype(np.float64) / SOFTCAP)
  _assert_diagnostics(metrics, _reference(data, capped, offline=True))


def _want_feature_layers(data, loss_type, names):
  distances = ref.feature_distance_per_layer(data["student_features"], data["teacher_features"], loss_type)
  return {name: _sums(distances[row]) for row, name in enumerate(names)}, 0.5 * _sums(distances.mean(0))


@pytest.mark.parametrize("loss_type", ("cosine", "l2"))
def test_per_layer_feature_loss_dense_online(loss_type):
  data = _data(3)
  logits = jnp.asarray(data["hidden"]) @ jnp.asarray(data["unembed"])
  teacher = heads.TeacherLogits(
      logits_BxSxV=jnp.asarray(data["teacher"], jnp.float32), features_LxBxSxD=jnp.asarray(data["teacher_features"])
  )
  _, _, metrics = objective.distillation_terms(
      logits,
      teacher,
      jnp.asarray(data["labels"]),
      jnp.asarray(MASK),
      _weights(),
      student_features_LxBxSxD=jnp.asarray(data["student_features"]),
      feature_loss_type=loss_type,
      feature_layers=(3, 5),  # the student's layer numbers name the metrics
  )
  names = ("distill/out_proj_feature_loss/layer_3", "distill/out_proj_feature_loss/layer_5")
  want, want_total = _want_feature_layers(data, loss_type, names)
  assert {n for n in metrics if n.startswith("distill/out_proj_feature_loss/")} == set(names)
  for name, value in want.items():
    np.testing.assert_allclose(float(metrics[name][0]), value, rtol=RTOL, atol=ATOL, err_msg=name)
    assert float(metrics[name][1]) == MASK.sum()
  np.testing.assert_allclose(float(metrics["distill/out_proj_feature_loss"][0]), want_total, rtol=RTOL, atol=ATOL)


def test_per_layer_feature_loss_lean_offline_numbers_all_layers_without_indices():
  data = _data(4)
  _, _, metrics = chunked_sparse.offline_distillation_terms_from_hidden(
      jnp.asarray(data["hidden"]),
      jnp.asarray(data["unembed"]),
      _cached(data, "bucket", with_features=True),
      jnp.asarray(data["labels"]),
      jnp.asarray(MASK),
      _weights(),
      student_features_LxBxSxD=jnp.asarray(data["student_features"]),
      vocab_chunk=5,
  )
  names = tuple(f"distill/out_proj_feature_loss/layer_{i}" for i in range(L))
  want, _ = _want_feature_layers(data, "cosine", names)
  for name, value in want.items():
    np.testing.assert_allclose(float(metrics[name][0]), value, rtol=RTOL, atol=ATOL, err_msg=name)


def test_feature_layers_must_name_every_row():
  data = _data(5)
  teacher = heads.TeacherLogits(
      logits_BxSxV=jnp.asarray(data["teacher"], jnp.float32), features_LxBxSxD=jnp.asarray(data["teacher_features"])
  )
  with pytest.raises(ValueError, match="feature_layers"):
    objective.distillation_terms(
        jnp.asarray(data["hidden"]) @ jnp.asarray(data["unembed"]),
        teacher,
        jnp.asarray(data["labels"]),
        jnp.asarray(MASK),
        _weights(),
        student_features_LxBxSxD=jnp.asarray(data["student_features"]),
        feature_layers=(0,),
    )


@pytest.mark.parametrize("offline", (False, True), ids=("online", "offline"))
def test_diagnostics_carry_no_gradient(offline):
  data = _data(6)
  teacher = _cached(data, "bucket") if offline else heads.TeacherLogits(logits_BxSxV=jnp.asarray(data["teacher"]))

  def diagnostics_sum(logits):
    _, _, metrics = objective.distillation_terms(
        logits, teacher, jnp.asarray(data["labels"]), jnp.asarray(MASK), _weights(), top_k=K
    )
    return sum(metrics[name][0] for name in DIAGNOSTICS)

  logits = jnp.asarray(data["hidden"]) @ jnp.asarray(data["unembed"])
  assert np.all(np.asarray(jax.grad(diagnostics_sum)(logits)) == 0.0)
