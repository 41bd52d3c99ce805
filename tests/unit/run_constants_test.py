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

"""The per-step TFLOPs of a run with several teachers: the student's training count plus every teacher's forward,
each from MaxText's own calculator called on that teacher's config."""

import dataclasses
import math
import os

from maxtext.utils import maxtext_utils

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.configuration import route_checks
from maxtext_distill_plugin.training import metrics_logger
from tests.conftest import TINY_YAML

_SINGLE_TEACHER = "teacher_overrides:\n  base_num_decoder_layers: 2\n"
MISSING = "/does/not/exist/checkpoints/0/items"  # plan mode builds the configs without reading a checkpoint


def _two_teacher_configs(tmp_path):
  """The tiny run with two teachers of different depths (2 and 4 layers), two micro-batches per step."""
  with open(TINY_YAML, encoding="utf-8") as f:
    text = f.read()
  assert _SINGLE_TEACHER in text
  entries = "".join(
      f"  - name: {name}\n    overrides:\n      base_num_decoder_layers: {layers}\n      load_parameters_path:"
      f" {MISSING}\n"
      for name, layers in (("small", 2), ("deep", 4))
  )
  path = os.path.join(tmp_path, "two.yml")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.replace(_SINGLE_TEACHER, "") + "teachers:\n" + entries)
  return config.build(["train_distill", path, "gradient_accumulation_steps=2"], plan=True)


def _calculator(cfg) -> float:
  return maxtext_utils.calculate_tflops_training_per_device(cfg, log=False)[0]


def test_tflops_count_the_student_and_every_teachers_forward(tmp_path):
  configs = _two_teacher_configs(tmp_path)
  teachers = metrics_logger.running_teachers(configs)
  assert [member.base_num_decoder_layers for member in teachers] == [2, 4]
  small, deep = (_calculator(member) for member in teachers)
  assert deep > small > 0  # two different counts: a sum of one of them twice would not pass
  constants = metrics_logger.RunConstants.for_run(configs.student, teachers, (1, 1))
  # Two micro-batches per optimizer step; each teacher runs forward only (a third of its training count).
  assert math.isclose(constants.tflops_student, 2 * _calculator(configs.student), rel_tol=1e-12)
  assert math.isclose(constants.tflops_teacher, 2 * (small + deep) / 3, rel_tol=1e-12)
  metrics = constants.metrics(step_time_s=2.0)
  assert math.isclose(
      metrics[metrics_logger.TFLOPS], 2 * (_calculator(configs.student) + (small + deep) / 3), rel_tol=1e-12
  )
  assert math.isclose(metrics[metrics_logger.TFLOPS_PER_SEC_TEACHER], (small + deep) / 3, rel_tol=1e-12)


def test_routed_teachers_count_their_rows_only(tmp_path):
  configs = _two_teacher_configs(tmp_path)
  teachers = metrics_logger.running_teachers(configs)
  small, deep = (_calculator(member) for member in teachers)
  # A routed batch of 4 rows per device: 3 rows scored by the first teacher, 1 by the second.
  routes = tuple(route_checks.RouteStream(name, rows, 10, None) for (name, _), rows in zip(configs.teachers, (3, 1)))
  shares = metrics_logger.teacher_row_shares(dataclasses.replace(configs, routes=routes))
  assert shares == (0.75, 0.25)
  assert metrics_logger.teacher_row_shares(configs) == (1.0, 1.0)  # mixed: every teacher scores every row
  _, teacher = metrics_logger.tflops_per_step(configs.student, teachers, shares)
  assert math.isclose(teacher, 2 * (0.75 * small + 0.25 * deep) / 3, rel_tol=1e-12)
