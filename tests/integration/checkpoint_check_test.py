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

"""Wrong checkpoints are refused before any model is built, naming the key; a fresh student is an empty path.

The teacher is the session fixture: 2 scanned layers, 64 wide, made by MaxText's own pre-training. Before this
check, MaxText's loader stopped the run with exit 1 (``Cannot align axis ...``) after building the student, or,
where an axis divides, silently repeated the checkpoint's weights to fit.
"""

import pytest

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration import checkpoint_checks
from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.student import freezing
from tests.conftest import TINY_YAML, run_cli


def _build(tmp_path, teacher_checkpoint, *overrides):
  return config.build([
      "train_distill",
      TINY_YAML,
      "run_name=r",
      f"base_output_directory={tmp_path}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      *overrides,
  ])


def _refusal(tmp_path, teacher_checkpoint, *overrides) -> errors.ConfigError:
  with pytest.raises(errors.ConfigError) as error:
    _build(tmp_path, teacher_checkpoint, *overrides)
  return error.value


def test_metadata_gives_the_models_parameters_without_reading_arrays(tmp_path, teacher_checkpoint, monkeypatch):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  teacher = _build(tmp_path, teacher_checkpoint).teacher  # the right config passes the check

  def no_restore(*args, **kwargs):
    raise AssertionError("the check read arrays")

  monkeypatch.setattr(ocp.Checkpointer, "restore", no_restore)
  monkeypatch.setattr(ocp.PyTreeCheckpointer, "restore", no_restore)
  stored = checkpoint_checks.stored_params(teacher_checkpoint)
  assert stored == freezing.abstract_params(teacher)
  assert stored["decoder/layers/mlp/wi_0/kernel"] == ((64, 2, 128), "float32")


@pytest.mark.parametrize(
    "override, key, config_value, checkpoint_value",
    [
        ("teacher_overrides.base_num_decoder_layers=3", "teacher_overrides.base_num_decoder_layers", 3, 2),
        ("teacher_overrides.base_num_decoder_layers=4", "teacher_overrides.base_num_decoder_layers", 4, 2),
        ("teacher_overrides.base_emb_dim=96", "teacher_overrides.base_emb_dim", 96, 64),
    ],
)
def test_teacher_shape_keys_that_disagree_are_named(
    tmp_path, teacher_checkpoint, override, key, config_value, checkpoint_value
):
  # 4 layers divide the stored 2: MaxText's loader would repeat the layers to fit instead of failing.
  refusal = _refusal(tmp_path, teacher_checkpoint, override)
  assert (refusal.key, refusal.value) == (key, config_value)
  assert f"Set {key}={checkpoint_value}" in refusal.fix and teacher_checkpoint in refusal.fix


def test_missing_and_extra_weights_are_refused(tmp_path, teacher_checkpoint):
  # Tied embeddings: the checkpoint's trained output projection would be dropped without a word.
  refusal = _refusal(tmp_path, teacher_checkpoint, "teacher_overrides.logits_via_embedding=True")
  assert refusal.key == "teacher_overrides.load_parameters_path"
  assert "checkpoint parameters are not in the model (e.g. decoder/logits_dense/kernel)" in refusal.fix
  other = _refusal(tmp_path, teacher_checkpoint, "teacher_overrides.decoder_block=simple")
  assert other.key == "teacher_overrides.load_parameters_path" and "decoder_block=simple)" in other.fix
  scan = _refusal(tmp_path, teacher_checkpoint, "teacher_overrides.scan_layers=False")
  assert (scan.key, scan.value) == ("teacher_overrides.scan_layers", False) and "scan_layers=True" in scan.fix


def test_a_loaded_student_is_checked_and_an_empty_path_is_a_fresh_student(tmp_path, teacher_checkpoint):
  # The YAML's student has 1 layer (student_overrides); the teacher's checkpoint has 2.
  refusal = _refusal(tmp_path, teacher_checkpoint, f"load_parameters_path={teacher_checkpoint}")
  assert (refusal.key, refusal.value) == ("student_overrides.base_num_decoder_layers", 1)
  loaded = _build(
      tmp_path,
      teacher_checkpoint,
      f"student_overrides.load_parameters_path={teacher_checkpoint}",
      "student_overrides.base_num_decoder_layers=2",
  )
  assert loaded.student.load_parameters_path == teacher_checkpoint
  # Upstream's recipes write a fresh student as an empty path; a bare `key=` reaches the overrides as None.
  for empty in ("student_overrides.load_parameters_path=", "load_parameters_path="):
    assert _build(tmp_path, teacher_checkpoint, empty).student.load_parameters_path == ""


@pytest.mark.slow  # a fresh interpreter (~20 s); the tests above run the same check in this process
def test_documented_command_exits_2_before_building_a_model(tmp_path, teacher_checkpoint):
  proc = run_cli(
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      "teacher_overrides.base_emb_dim=96",
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "maxtext-distill: teacher_overrides.base_emb_dim=96 is invalid" in proc.stderr
  assert "it was made with base_emb_dim=64" in proc.stderr
  assert "Loading teacher" not in proc.stderr and "Cannot align" not in proc.stderr
