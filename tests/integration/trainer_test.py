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

"""The real online trainer on tiny models: relations between logged values, steps, accumulation."""

import math

import numpy as np
import pytest

from tests.conftest import train_in_process

RTOL = 1e-5


def _by_step(history):
  return {h["step"]: h for h in history if "distill/total_loss" in h}


def test_alpha_one_total_is_soft_and_alpha_zero_total_is_hard(tmp_path, teacher_checkpoint):
  soft_only = _by_step(train_in_process(tmp_path / "a1", teacher_checkpoint, "distill_alpha=1.0", "steps=3").history)
  hard_only = _by_step(train_in_process(tmp_path / "a0", teacher_checkpoint, "distill_alpha=0.0", "steps=3").history)
  assert sorted(soft_only) == sorted(hard_only) == [1, 2, 3]
  for step in soft_only:
    np.testing.assert_allclose(soft_only[step]["distill/total_loss"], soft_only[step]["distill/soft_loss"], rtol=RTOL)
    np.testing.assert_allclose(hard_only[step]["distill/total_loss"], hard_only[step]["distill/hard_loss"], rtol=RTOL)
    assert soft_only[step]["distill/out_proj_feature_loss"] == 0.0
  # The student trains: its CE falls; the frozen teacher's CE on the same batch does not move.
  assert hard_only[3]["distill/hard_loss"] < hard_only[1]["distill/hard_loss"] - 0.05
  teacher = [hard_only[s]["distill/teacher_loss"] for s in (1, 2, 3)]
  np.testing.assert_allclose(teacher, teacher[0], rtol=1e-6)
  # Perplexity is exp(CE), not exp(total).
  for h in hard_only.values():
    np.testing.assert_allclose(h["distill/student_perplexity"], math.exp(h["distill/hard_loss"]), rtol=RTOL)


def _independent_schedule(kind, start, end, step, total):
  progress = min(max(step / total, 0.0), 1.0)
  if kind == "linear":
    return start + (end - start) * progress
  return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


def test_logged_schedules_follow_config_and_beta_ramps_up_from_zero(tmp_path, teacher_checkpoint):
  steps = 4
  history = train_in_process(
      tmp_path,
      teacher_checkpoint,
      f"steps={steps}",
      "distill_alpha=0.9",
      "distill_alpha_end=0.5",
      "distill_alpha_schedule=linear",
      "distill_temperature=2.0",
      "distill_temperature_end=1.0",
      "distill_temperature_schedule=cosine",
      "distill_beta=0.0",
      "distill_beta_end=0.5",
      "distill_beta_schedule=linear",
      "distill_layer_indices=[0]",
  ).history
  logged = _by_step(history)
  assert sorted(logged) == list(range(1, steps + 1))
  for logged_step, h in logged.items():
    optimizer_step = logged_step - 1  # the weights used by the update that produced this log line
    np.testing.assert_allclose(h["distill/alpha"], _independent_schedule("linear", 0.9, 0.5, optimizer_step, steps), 1e-6)
    np.testing.assert_allclose(
        h["distill/temperature"], _independent_schedule("cosine", 2.0, 1.0, optimizer_step, steps), 1e-6
    )
    np.testing.assert_allclose(
        h["distill/beta_feature"], _independent_schedule("linear", 0.0, 0.5, optimizer_step, steps)
    )
  # beta starts at 0: no feature term at step 1, a positive one once beta > 0.
  assert logged[1]["distill/out_proj_feature_loss"] == 0.0
  assert all(logged[s]["distill/out_proj_feature_loss"] > 0.0 for s in (2, 3, 4))
  for h in logged.values():
    total = h["distill/alpha"] * h["distill/soft_loss"] + (1 - h["distill/alpha"]) * h["distill/hard_loss"]
    np.testing.assert_allclose(h["distill/total_loss"], total + h["distill/out_proj_feature_loss"], rtol=1e-5)


def test_beta_zero_gives_zero_feature_term_and_kl_at_t1(tmp_path, teacher_checkpoint):
  logged = _by_step(train_in_process(tmp_path, teacher_checkpoint, "steps=2", "distill_beta=0.0").history)
  for h in logged.values():
    assert h["distill/out_proj_feature_loss"] == 0.0
    # T = 1: the KL at T equals the KL at 1, and soft = KL * T^2 = KL.
    np.testing.assert_allclose(h["distill/kl_div_at_T"], h["distill/kl_div_T1"], rtol=RTOL)
    np.testing.assert_allclose(h["distill/soft_loss"], h["distill/kl_div_T1"], rtol=RTOL)
    assert h["grad_norm"] > 0 and h["learning_rate"] > 0 and h["perf/tokens_per_s"] > 0


def test_run_stops_at_steps_and_checkpoints_last_step(tmp_path, teacher_checkpoint):
  result = train_in_process(tmp_path, teacher_checkpoint, "steps=3", "checkpoint_period=1000", run_name="stop")
  assert result.last_step == 2
  assert max(h["step"] for h in result.history) == 3
  ckpt = tmp_path / "stop" / "checkpoints"
  assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [0, 2]


@pytest.mark.parametrize("feature_flags", [(), ("distill_beta=0.5", "distill_layer_indices=[0]")])
def test_gradient_accumulation_keeps_schedules_and_losses(tmp_path, teacher_checkpoint, feature_flags):
  common = ("steps=3", "distill_alpha=0.9", "distill_alpha_end=0.1", "distill_alpha_schedule=cosine", *feature_flags)
  full = _by_step(
      train_in_process(
          tmp_path / "full", teacher_checkpoint, *common, "per_device_batch_size=4", "gradient_accumulation_steps=1"
      ).history
  )
  accum = _by_step(
      train_in_process(
          tmp_path / "accum", teacher_checkpoint, *common, "per_device_batch_size=2", "gradient_accumulation_steps=2"
      ).history
  )
  assert sorted(full) == sorted(accum) == [1, 2, 3]
  for step in full:
    for name in ("distill/alpha", "distill/temperature", "distill/beta_feature", "learning_rate"):
      np.testing.assert_allclose(accum[step][name], full[step][name], rtol=1e-6)
    for name in (
        "distill/total_loss",
        "distill/hard_loss",
        "distill/soft_loss",
        "distill/out_proj_feature_loss",
        "grad_norm",
    ):
      np.testing.assert_allclose(accum[step][name], full[step][name], rtol=1e-5, atol=1e-6)
