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

"""A real run that optimises JSD(0.5) logs the divergence it optimises and the loss diagnostics."""

import math

import numpy as np

from tests.conftest import train_in_process

RTOL = 1e-5
VOCAB = 512


def _jsd_run(tmp_path, teacher_checkpoint, impl, temperature, alpha, beta):
  return train_in_process(
      tmp_path / impl,
      teacher_checkpoint,
      "steps=2",
      f"distill_loss_impl={impl}",
      "distill_divergence=jsd",
      "distill_divergence_beta=0.5",
      f"distill_temperature={temperature}",
      f"distill_alpha={alpha}",
      f"distill_beta={beta}",
      "distill_layer_indices=[0]",
      "distill_top_k=16",
  ).history


def test_jsd_run_logs_the_divergence_at_t_and_the_diagnostics_on_the_dense_and_lean_paths(tmp_path, teacher_checkpoint):
  temperature, alpha, beta = 2.0, 0.7, 0.5
  runs = {impl: _jsd_run(tmp_path, teacher_checkpoint, impl, temperature, alpha, beta) for impl in ("dense", "chunked")}
  dense, lean = ([h for h in history if "distill/total_loss" in h] for history in runs.values())
  assert len(dense) == len(lean) == 2
  # Same start, same data: the first step's numbers agree across the paths (the lean one never builds [B, S, V]).
  for name, value in dense[0].items():
    if name.startswith("distill/"):
      np.testing.assert_allclose(lean[0][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
  for h in dense + lean:
    divergence = h["distill/divergence_at_T"]
    # JSD(1/2) lies in [0, log 2]; it is what the soft loss and the total are made of, not the logged forward KL.
    assert 0.0 < divergence <= math.log(2.0)
    assert abs(divergence - h["distill/kl_div_at_T"]) > 1e-3
    np.testing.assert_allclose(h["distill/soft_loss"], temperature**2 * divergence, rtol=RTOL)
    total = alpha * h["distill/soft_loss"] + (1 - alpha) * h["distill/hard_loss"] + h["distill/out_proj_feature_loss"]
    np.testing.assert_allclose(h["distill/total_loss"], total, rtol=RTOL)
    # The diagnostics, in their ranges; one selected layer, whose distance times beta is the feature loss.
    assert 0.0 <= h["distill/top1_agreement"] <= 1.0
    for name in ("distill/teacher_entropy", "distill/student_entropy"):
      assert 0.0 < h[name] <= math.log(VOCAB) + 1e-6, name
    assert 0.0 < h["distill/topk_coverage"] <= 1.0
    np.testing.assert_allclose(h["distill/out_proj_feature_loss"], beta * h["distill/out_proj_feature_loss/layer_0"])
  # The student trains on it.
  assert dense[1]["distill/divergence_at_T"] != dense[0]["distill/divergence_at_T"]
