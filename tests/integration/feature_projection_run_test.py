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

"""A narrower student learns the feature projection to a wider teacher's width (``distill_feature_projection=linear``);
the projection is saved beside, never inside, the MaxText checkpoint, and a resumed run continues exactly."""

import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from maxtext_distill_plugin.configuration import checkpoint_checks
from maxtext_distill_plugin.loss import feature_projection
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.student import freezing
from maxtext_distill_plugin.training import objective_params
from maxtext_distill_plugin.training import trainer
from tests.conftest import committed_steps, maxtext_pretrain, tiny_configs

# The tiny student has 1 layer, the teacher 2: align the student's layer with the teacher's last.
_PROJECTED = (
    "distill_beta=1.0",
    "distill_layer_indices=[0]",
    "distill_teacher_layer_indices=[1]",
    "distill_feature_projection=linear",
    "learning_rate=1e-2",
)
_KERNEL = f"params.{feature_projection.PARAMS_KEY}.kernel"


def _train(tmp_path, teacher_checkpoint: str, *overrides: str, run_name: str = "run"):
  configs = tiny_configs(tmp_path, teacher_checkpoint, *overrides, run_name=run_name)
  return configs, trainer.train(configs)


def _feature_losses(history) -> dict[int, float]:
  return {h["step"]: h[metric_names.FEATURE_LOSS] for h in history if metric_names.FEATURE_LOSS in h}


def _stored_objective(run_dir, step: int) -> dict:
  return ocp.PyTreeCheckpointer().restore(os.path.join(run_dir, objective_params.OBJECTIVE_DIR, str(step)))


def _assert_maxtext_checkpoint_holds_the_model_only(configs, items: str) -> None:
  """Every name in MaxText's checkpoint is the student model's or its optimizer's; its parameters are exactly the
  model's, as a MaxText-only consumer (load_parameters_path) compares them."""
  metadata = ocp.PyTreeCheckpointer().metadata(items)
  tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata.tree
  names = [name for name, _ in checkpoint_checks._flatten(tree)]  # pylint: disable=protected-access
  assert names and not [n for n in names if "projection" in n and "out_projection" not in n], names
  stored = checkpoint_checks.stored_params(items)
  expected = freezing.abstract_params(configs.student)
  assert sorted(stored) == sorted(expected)
  assert checkpoint_checks.describe_mismatch(stored, expected, configs.student) is None


def test_narrow_student_learns_a_projection_to_a_wider_teacher(tmp_path, teacher_checkpoint):
  """A 32-wide student against the session's 64-wide teacher (the default suite's run; the 64 -> 128 case and the
  resume are the slow test below)."""
  configs, result = _train(
      tmp_path, teacher_checkpoint, *_PROJECTED, "student_overrides.base_emb_dim=32", "steps=6", "checkpoint_period=3"
  )
  losses = _feature_losses(result.history)
  assert sorted(losses) == [1, 2, 3, 4, 5, 6]
  assert losses[6] < 0.8 * losses[1], losses
  run_dir = tmp_path / "run"
  assert committed_steps(run_dir / "checkpoints") == [0, 3, 5]
  assert sorted(os.listdir(run_dir / objective_params.OBJECTIVE_DIR)) == ["0", "3", "5"]
  kernel = _stored_objective(run_dir, 5)[_KERNEL]
  initial = feature_projection.init_kernel(int(configs.student.init_weights_seed), 1, 32, 64)
  assert kernel.shape == (1, 32, 64) and np.abs(kernel - initial).max() > 1e-3  # trained with the student
  _assert_maxtext_checkpoint_holds_the_model_only(configs, str(run_dir / "checkpoints" / "5" / "items"))


@pytest.fixture(scope="module")
def wide_teacher_checkpoint(tmp_path_factory) -> str:
  """A 2-layer, 128-wide teacher trained 1 step by MaxText."""
  out = tmp_path_factory.mktemp("wide_teacher")
  proc = maxtext_pretrain(out, "wide", "base_num_decoder_layers=2", "base_emb_dim=128", "steps=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(out / "wide" / "checkpoints" / "0" / "items")


@pytest.mark.slow
def test_64_wide_student_against_128_wide_teacher_resumes_with_identical_projection(tmp_path, wide_teacher_checkpoint):
  common = (*_PROJECTED, "checkpoint_period=2", "teacher_overrides.base_emb_dim=128", "steps=6")
  configs, first = _train(tmp_path, wide_teacher_checkpoint, *common)
  losses = _feature_losses(first.history)
  assert losses[6] < 0.8 * losses[1], losses
  run_dir = tmp_path / "run"
  assert committed_steps(run_dir / "checkpoints") == [0, 2, 4, 5]
  _assert_maxtext_checkpoint_holds_the_model_only(configs, str(run_dir / "checkpoints" / "5" / "items"))
  want = _stored_objective(run_dir, 5)
  assert want[_KERNEL].shape == (1, 64, 128)
  # As if the run had died right after its checkpoint of step 2: MaxText resumes there, the objective's tree with it.
  for step in (4, 5):
    shutil.rmtree(run_dir / "checkpoints" / str(step))
  _, resumed = _train(tmp_path, wide_teacher_checkpoint, *common)
  resumed_losses = _feature_losses(resumed.history)
  assert sorted(resumed_losses) == [4, 5, 6]  # optimizer step k is logged as k + 1
  for step, value in resumed_losses.items():
    np.testing.assert_allclose(value, losses[step], rtol=1e-6)
  got = _stored_objective(run_dir, 5)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)
