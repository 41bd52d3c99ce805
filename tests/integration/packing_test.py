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

"""Packing and padding leave the loss of each real token unchanged (real MaxText models, segment ids)."""

import jax.numpy as jnp
import numpy as np

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.model import forward as model_forward
from tests.conftest import TINY_YAML


def _batch(rows):
  """rows: list of (tokens, segment_ids, positions) lists of equal length."""
  tokens = jnp.asarray([r[0] for r in rows], jnp.int32)
  segments = jnp.asarray([r[1] for r in rows], jnp.int32)
  positions = jnp.asarray([r[2] for r in rows], jnp.int32)
  targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
  target_segments = jnp.where(
      jnp.concatenate([segments[:, 1:], jnp.zeros_like(segments[:, :1])], 1) == segments, segments, 0
  )
  return {
      "inputs": tokens,
      "inputs_segmentation": segments,
      "inputs_position": positions,
      "targets": targets,
      "targets_segmentation": target_segments,
      "targets_position": positions,
  }


def test_packed_row_equals_two_padded_rows(tmp_path, teacher_checkpoint):
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  cfgs = config.build([
      "p",
      TINY_YAML,
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"base_output_directory={tmp_path}",
      "per_device_batch_size=2",
      "distill_temperature=2.0",
      "packing=True",
  ])
  mesh = maxtext_utils.get_mesh_from_config(cfgs.teacher)
  student = model_creation_utils.from_pretrained(cfgs.student, mesh=mesh)
  teacher = model_creation_utils.from_pretrained(cfgs.teacher, mesh=mesh)
  rng = np.random.default_rng(0)
  seq = cfgs.student.max_target_length
  a, b = rng.integers(1, 500, 13).tolist(), rng.integers(1, 500, seq - 13).tolist()
  packed = _batch([
      (a + b, [1] * 13 + [2] * (seq - 13), list(range(13)) + list(range(seq - 13))),
      (a + b, [1] * 13 + [2] * (seq - 13), list(range(13)) + list(range(seq - 13))),
  ])
  padded = _batch([
      (a + [0] * (seq - 13), [1] * 13 + [0] * (seq - 13), list(range(13)) + [0] * (seq - 13)),
      (b + [0] * 13, [1] * (seq - 13) + [0] * 13, list(range(seq - 13)) + [0] * 13),
  ])
  weights = objective.LossWeights(alpha=jnp.float32(0.4), temperature=jnp.float32(2.0), beta=jnp.float32(0.0))

  def terms(batch):
    s_logits, _ = model_forward.forward(student, batch, settings=cfgs.settings, enable_dropout=False)
    t_logits, _ = model_forward.forward(teacher, batch, settings=cfgs.settings, enable_dropout=False)
    total, count, metrics = objective.distillation_terms(
        s_logits, heads.TeacherLogits(t_logits), batch["targets"], model_forward.token_mask(batch), weights
    )
    return float(total) / 2, float(count) / 2, {k: float(v[0]) / 2 for k, v in metrics.items()}  # packed: per row

  packed_total, packed_count, packed_metrics = terms(packed)
  padded_total, padded_count, padded_metrics = terms(padded)
  padded_total, padded_count = padded_total * 2, padded_count * 2
  padded_metrics = {k: v * 2 for k, v in padded_metrics.items()}
  assert packed_count == padded_count == seq - 2  # the last token of each sequence has no target
  np.testing.assert_allclose(packed_total, padded_total, rtol=1e-5)
  for name, value in padded_metrics.items():
    np.testing.assert_allclose(packed_metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
