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

"""paths picks the loss from the types of the two models' outputs, and returns what that loss returns."""

import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.loss import chunked_objective
from maxtext_distill_plugin.loss import chunked_sparse
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import paths
from maxtext_distill_plugin.training import student_objective

B, S, D, V, K = 2, 3, 4, 9, 3


def _arrays(seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda x: jnp.asarray(x, jnp.float32)  # pylint: disable=unnecessary-lambda-assignment
  return {
      "student_hidden": f32(rng.standard_normal((B, S, D))),
      "student_unembed": f32(rng.standard_normal((D, V))),
      "teacher_hidden": f32(rng.standard_normal((B, S, D + 1))),
      "teacher_unembed": f32(rng.standard_normal((D + 1, V))),
      "labels": jnp.asarray(rng.integers(0, V, (B, S)), jnp.int32),
      "mask": jnp.asarray([[1, 1, 0], [1, 1, 1]], bool),
      "features": f32(rng.standard_normal((2, 2, B, S, 5))),
  }


def _weights():
  return objective.LossWeights(alpha=jnp.float32(0.6), temperature=jnp.float32(2.0), beta=jnp.float32(0.5))


def _cached(a):
  logp = jnp.log(jnp.asarray(np.random.default_rng(1).dirichlet(np.ones(V), (B, S)), jnp.float32))
  order = jnp.argsort(-logp, axis=-1)[..., :K]
  tail = jnp.log1p(-jnp.sum(jnp.exp(jnp.take_along_axis(logp, order, -1)), -1))
  del a
  return heads.CachedTopK(
      topk_ids_BxSxK=order, topk_logprobs_BxSxK=jnp.take_along_axis(logp, order, -1), tail_logmass_BxS=tail
  )


def _assert_same(got, want):
  assert set(got[2]) == set(want[2])
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  for name in want[2]:
    np.testing.assert_array_equal(np.asarray(got[2][name][0]), np.asarray(want[2][name][0]), err_msg=name)


@pytest.mark.parametrize("offline", (False, True), ids=("online", "offline"))
def test_dense_student_takes_the_dense_objective(offline):
  a, settings = _arrays(), DistillSettings(distill_divergence="jsd", distill_top_k=4)
  logits = a["student_hidden"] @ a["student_unembed"]
  teacher = _cached(a) if offline else heads.TeacherLogits(logits_BxSxV=a["teacher_hidden"] @ a["teacher_unembed"])
  got = paths.distillation_terms(
      heads.StudentLogits(logits), teacher, a["labels"], a["mask"], _weights(), student_objective.loss_options(settings)
  )
  want = objective.distillation_terms(
      logits, teacher, a["labels"], a["mask"], _weights(), divergence="jsd", divergence_param=0.5, top_k=4
  )
  _assert_same(got, want)


def test_hidden_student_and_cached_teacher_take_the_lean_offline_loss():
  a, settings = _arrays(2), DistillSettings(distill_divergence="tvd", distill_vocab_chunk=4)
  student = heads.StudentHidden(a["student_hidden"], a["student_unembed"], softcap=2.0)
  got = paths.distillation_terms(
      student, _cached(a), a["labels"], a["mask"], _weights(), student_objective.loss_options(settings)
  )
  want = chunked_sparse.offline_distillation_terms_from_hidden(
      a["student_hidden"],
      a["student_unembed"],
      _cached(a),
      a["labels"],
      a["mask"],
      _weights(),
      vocab_chunk=4,
      student_logit_softcap=2.0,
      divergence="tvd",
  )
  _assert_same(got, want)


def test_hidden_teacher_takes_the_lean_online_loss_with_the_settings_divergence_and_layer_names():
  a = _arrays(3)
  settings = DistillSettings(
      distill_beta=0.5,
      distill_layer_indices=[1, 4],
      distill_teacher_layer_indices=[0, 2],
      distill_divergence="jsd",
      distill_divergence_beta=0.25,
      distill_top_k=3,
  )
  student = heads.StudentHidden(a["student_hidden"], a["student_unembed"])
  teacher = heads.TeacherHidden(a["teacher_hidden"], a["teacher_unembed"], a["features"][1])
  got = paths.distillation_terms(
      student,
      teacher,
      a["labels"],
      a["mask"],
      _weights(),
      student_objective.loss_options(settings),
      student_features_LxBxSxD=a["features"][0],
  )
  want = chunked_objective.distillation_terms_from_hidden(
      a["student_hidden"],
      a["student_unembed"],
      a["teacher_hidden"],
      a["teacher_unembed"],
      a["labels"],
      a["mask"],
      _weights(),
      student_features_LxBxSxD=a["features"][0],
      teacher_features_LxBxSxD=a["features"][1],
      divergence="jsd",
      divergence_param=0.25,
      diagnostics=True,
      coverage_top_k=3,
      feature_layers=(1, 4),
  )
  _assert_same(got, want)
  assert {"distill/out_proj_feature_loss/layer_1", "distill/out_proj_feature_loss/layer_4"} <= set(got[2])
  assert {"distill/top1_agreement", "distill/topk_coverage"} <= set(got[2])


def test_pairs_no_path_takes_are_refused():
  a = _arrays(4)
  teacher = heads.TeacherHidden(a["teacher_hidden"], a["teacher_unembed"])
  dense = heads.StudentLogits(a["student_hidden"] @ a["student_unembed"])
  with pytest.raises(TypeError, match="no loss path"):
    paths.distillation_terms(
        dense, teacher, a["labels"], a["mask"], _weights(), student_objective.loss_options(DistillSettings())
    )
