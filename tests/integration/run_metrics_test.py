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

"""The metrics upstream has (TFLOPs, teacher perplexity, parameter counts) on a real run, and its run record."""

import math

import yaml
from maxtext.utils import maxtext_utils

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.training import run_record
from tests.conftest import TINY_YAML, read_metrics, train_in_process


def test_tflops_equal_maxtexts_calculator_per_optimizer_step(tmp_path, teacher_checkpoint):
  extra = ("gradient_accumulation_steps=2", "steps=2", f"metrics_file={tmp_path / 'm.jsonl'}")
  train_in_process(tmp_path, teacher_checkpoint, *extra)
  argv = ["train_distill", TINY_YAML, "run_name=run", f"base_output_directory={tmp_path}"]
  configs = config.build(argv + [f"teacher_overrides.load_parameters_path={teacher_checkpoint}", *extra])
  student, _, _ = maxtext_utils.calculate_tflops_training_per_device(configs.student, log=False)
  teacher, _, _ = maxtext_utils.calculate_tflops_training_per_device(configs.teacher, log=False)
  # Two micro-batches per optimizer step; the teacher runs forward only (a third of a training step).
  expected_student, expected_teacher = 2 * student, 2 * teacher / 3
  records = [r for r in read_metrics(tmp_path / "m.jsonl") if "distill/total_loss" in r]
  assert len(records) == 2
  for r in records:
    assert math.isclose(r["perf/per_device_tflops_student"], expected_student, rel_tol=1e-12)
    assert math.isclose(r["perf/per_device_tflops_teacher"], expected_teacher, rel_tol=1e-12)
    assert math.isclose(r["perf/per_device_tflops"], expected_student + expected_teacher, rel_tol=1e-12)
    for suffix in ("", "_student", "_teacher"):
      rate = r[f"perf/per_device_tflops_per_sec{suffix}"]
      assert math.isclose(rate, r[f"perf/per_device_tflops{suffix}"] / r["perf/step_time_s"], rel_tol=1e-9)
    assert math.isclose(r["distill/teacher_perplexity"], math.exp(r["distill/teacher_loss"]), rel_tol=1e-12)
    assert r["params/trainable"] == r["params/total"] > 0  # nothing frozen
  resolved = yaml.safe_load((tmp_path / "run" / run_record.CONFIG_FILE).read_text())
  for key in ("gradient_accumulation_steps", "steps", "base_emb_dim", "vocab_size", "learning_rate", "model_name"):
    assert resolved[key] == getattr(configs.student, key), key
  teacher_resolved = yaml.safe_load((tmp_path / "run" / run_record.TEACHER_CONFIG_FILE).read_text())
  assert teacher_resolved["num_decoder_layers"] == 2 and resolved["num_decoder_layers"] == 1
