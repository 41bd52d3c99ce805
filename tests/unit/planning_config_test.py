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

"""The configs the planner builds: a run's own, with the target's keys reaching the teacher too, and a checkpoint
path that does not exist yet accepted (with a warning) only in plan mode."""

import pytest

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration import config
from tests.conftest import TINY_YAML

MISSING = "/does/not/exist/checkpoints/0/items"


def _argv(*extra):
  return ["train_distill", TINY_YAML, f"teacher_overrides.load_parameters_path={MISSING}", *extra]


def test_the_topology_and_its_slices_reach_the_teacher():
  configs = config.build(_argv("compile_topology=v5p-8", "compile_topology_num_slices=2"), plan=True)
  for cfg in (configs.student, configs.teacher):
    assert (cfg.compile_topology, cfg.compile_topology_num_slices, cfg.num_slices) == ("v5p-8", 2, 2)
  # 4 devices per v5p-8 slice, 2 slices, 2 rows each: the teacher sizes its batch like the student it reads.
  assert configs.teacher.global_batch_size_to_load == configs.student.global_batch_size_to_load == 16


def test_a_missing_teacher_checkpoint_is_a_warning_when_planning_and_refused_otherwise(caplog):
  with caplog.at_level("WARNING"):
    configs = config.build(_argv(), plan=True)
  assert configs.teacher.load_parameters_path == MISSING
  assert f"teacher_overrides.load_parameters_path={MISSING} does not exist" in caplog.text
  with pytest.raises(errors.ConfigError, match="point it at an existing MaxText checkpoint"):
    config.build(_argv())
