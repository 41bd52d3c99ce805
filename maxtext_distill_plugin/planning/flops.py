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

"""FLOPs per step from MaxText's own TFLOPs calculator, and the step time they take at the chip's peak.

XLA's ``cost_analysis`` counts each ``while`` body once (scanned layers, tile loops), so it undercounts by the trip
counts; MaxText's calculator counts the model's matmuls and attention from its config.
"""


def per_device(configs) -> dict:
  """Per-device FLOPs of one optimizer step: the student's forward and backward (MaxText's training count, which
  includes gradient accumulation) and every teacher's forward (a third of its training count each: with
  ``teachers:`` each runs on the whole batch, whatever the mixture)."""
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  def training(config) -> float:
    return maxtext_utils.calculate_tflops_training_per_device(config, log=False)[0] * 1e12

  student = training(configs.student)
  members = configs.teachers or ((("teacher", configs.teacher),) if configs.teacher is not None else ())
  by_teacher = {name: training(config) / 3 for name, config in members}
  teacher = sum(by_teacher.values())
  return {
      "student_fwd_bwd": student,
      "teacher_fwd": teacher,
      "teacher_fwd_by_name": by_teacher,
      "total": student + teacher,
  }


def step_seconds_lower_bound(total_flops: float, peak_flops: float) -> float | None:
  """The step can be no faster than its FLOPs at the device's peak (None when the target has no stated peak)."""
  return total_flops / peak_flops if peak_flops > 0 else None
