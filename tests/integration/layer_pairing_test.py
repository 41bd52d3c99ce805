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

"""distill_teacher_layer_indices pairs a student layer with a different teacher layer (real MaxText models)."""

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.model import forward as model_forward
from maxtext_distill_plugin.teachers import kinds
from maxtext_distill_plugin.training import student_objective
from tests.conftest import TINY_YAML


@pytest.fixture(name="paired")
def _paired(tmp_path, teacher_checkpoint):
  """1-layer student, 2-layer teacher; student layer 0 paired with teacher layer 1."""
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  cfgs = config.build([
      "p",
      TINY_YAML,
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"base_output_directory={tmp_path}",
      "distill_beta=1.0",
      "distill_layer_indices=[0]",
      "distill_teacher_layer_indices=[1]",
  ])
  mesh = maxtext_utils.get_mesh_from_config(cfgs.teacher)
  student = model_creation_utils.from_pretrained(cfgs.student, mesh=mesh)
  teacher = model_creation_utils.from_pretrained(cfgs.teacher, mesh=mesh)
  rng = np.random.default_rng(3)
  batch_size, seq = cfgs.student.per_device_batch_size, cfgs.student.max_target_length
  tokens = jnp.asarray(rng.integers(1, cfgs.student.vocab_size, (int(batch_size), seq)), jnp.int32)
  segments = jnp.ones_like(tokens).at[1, seq - 5 :].set(0)  # right padding on the second row
  batch = {
      "inputs": tokens,
      "inputs_segmentation": segments,
      "inputs_position": jnp.broadcast_to(jnp.arange(seq), tokens.shape),
      "targets": jnp.roll(tokens, -1, axis=1),
      "targets_segmentation": segments,
  }
  return cfgs, student, teacher, batch


def _all_layers(model, batch, settings):
  """Every scanned layer's sown activations, ``[L, B, S, D]``."""
  every = settings.model_copy(update={"distill_layer_indices": None, "distill_teacher_layer_indices": None})
  return np.asarray(model_forward.forward(model, batch, settings=every, enable_dropout=False, teacher=True)[1])


def test_teacher_features_come_from_the_paired_layer(paired):
  cfgs, student, teacher, batch = paired
  teacher_all = _all_layers(teacher, batch, cfgs.settings)
  student_all = _all_layers(student, batch, cfgs.settings)
  assert teacher_all.shape[0] == 2 and student_all.shape[0] == 1
  assert not np.allclose(teacher_all[0], teacher_all[1])  # the pairing is observable

  _, teacher_feats = model_forward.forward(teacher, batch, settings=cfgs.settings, enable_dropout=False, teacher=True)
  _, student_feats = model_forward.forward(student, batch, settings=cfgs.settings, enable_dropout=False)
  np.testing.assert_array_equal(np.asarray(teacher_feats), teacher_all[1:2])
  np.testing.assert_array_equal(np.asarray(student_feats), student_all[0:1])


def test_feature_loss_uses_the_pairing_against_a_numpy_reference(paired):
  cfgs, student, teacher, batch = paired
  teacher_out = kinds.FrozenModel(nnx.graphdef(teacher), cfgs.settings).head(nnx.state(teacher), batch, lean=False)
  weights = objective.LossWeights(alpha=jnp.float32(0.5), temperature=jnp.float32(1.0), beta=jnp.float32(1.0))
  _, _, metrics = student_objective.student_terms(
      student, teacher_out, batch, weights, cfgs.settings, chunked=False, enable_dropout=False
  )

  s = _all_layers(student, batch, cfgs.settings)[0].astype(np.float64)
  t = _all_layers(teacher, batch, cfgs.settings)[1].astype(np.float64)
  cosine = np.sum(s * t, -1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
  mask = np.asarray(batch["targets_segmentation"]) != 0
  expected = np.sum((1.0 - cosine) * mask) / mask.sum()
  total, count = metrics["distill/out_proj_feature_loss"]
  np.testing.assert_allclose(float(total) / float(count), expected, rtol=1e-4)
