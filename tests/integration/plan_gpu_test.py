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

"""The planner compiling for an 8-GPU H100 host through JAX's CUDA plugin on a machine without a GPU (make
test-gpu-aot, in .venv-gpu): XLA's GPU compiler plans the run's lean step for the described devices; the report
carries the H100's memory and peak, and the lean step holds no ``[B, S, V]`` buffer.
"""

import pytest

from tests.integration import plan_testing

pytestmark = pytest.mark.scale

# V=32000 with D=256 and S=1024 in 128-position tiles, as test-scale's TPU plan.
TINY_GPU = (
    "configs/distillation-cpu-tiny.yml",
    "teacher_overrides.load_parameters_path=/does/not/exist/items",
    "dtype=bfloat16",
    "vocab_size=32000",
    "teacher_overrides.vocab_size=32000",
    "base_emb_dim=256",
    "base_mlp_dim=512",
    "max_target_length=1024",
    "per_device_batch_size=2",
    "compile_topology=h100-8",
)


@pytest.fixture(scope="module")
def gpu_plan(tmp_path_factory):
  return plan_testing.lean_plan(tmp_path_factory.mktemp("gpu"), TINY_GPU)


def test_the_plan_is_for_eight_h100s(gpu_plan):
  target = gpu_plan["target"]
  assert (target["platform"], target["num_devices"], target["hbm_bytes"]) == ("gpu", 8, 84_929_347_584)
  lean = gpu_plan["paths"]["lean"]
  assert lean["fits"] and 0 < lean["memory"]["total"] < target["hbm_bytes"]
  assert (
      lean["memory"]["total"] == sum(lean["memory"][k] for k in ("argument", "output", "temp")) - lean["memory"]["alias"]
  )
  # 8 GPUs share the batch: 16 rows of 1024 positions; the calculator's FLOPs at the H100's bf16 peak.
  assert gpu_plan["step_seconds_lower_bound"] == pytest.approx(gpu_plan["flops_per_device"]["total"] / 989e12)


def test_the_lean_step_holds_no_sequence_by_vocabulary_buffer_on_the_gpu(gpu_plan):
  assert gpu_plan["paths"]["lean"]["sequence_vocab_buffers"] == []


def test_maxtexts_gpu_flash_attention_lowers_without_a_gpu(tmp_path):
  # tokamax's Triton flash attention (MaxText's attention=flash on a GPU) checks the device it traces for, the CPU host
  # here, unless cross-compiling; and with skip_jax_distributed_system=False JAX would look for a GPU coordinator.
  plan = plan_testing.lean_plan(tmp_path, (*TINY_GPU, "attention=flash", "skip_jax_distributed_system=False"))
  lean = plan["paths"]["lean"]
  assert lean["fits"] and lean["sequence_vocab_buffers"] == []
  assert plan["config"][-2:] == ["attention=flash", "skip_jax_distributed_system=False"]
