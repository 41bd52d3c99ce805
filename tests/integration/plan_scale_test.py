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

"""``make test-scale``: the planner compiles a tiny distillation for a v5p-8 through libtpu (in .venv-tpu), and the
lean step must hold no ``[B, S, V]`` buffer and run no vocabulary-sized collective inside a loop (the per-tile
all-gathers of the unembeddings that issue 17 found at real scale).
"""

import pytest

from tests.integration import plan_testing

pytestmark = pytest.mark.scale

# V=32000 with D=256 and S=1024 in 128-position tiles: 8 tiles, sizes that collide with nothing.
TINY_TPU = (
    "configs/distillation-cpu-tiny.yml",
    "teacher_overrides.load_parameters_path=/does/not/exist/items",
    "hardware=tpu",
    "dtype=bfloat16",
    "vocab_size=32000",
    "teacher_overrides.vocab_size=32000",
    "base_emb_dim=256",
    "base_mlp_dim=512",
    "max_target_length=1024",
    "per_device_batch_size=2",
    "compile_topology=v5p-8",
)


@pytest.fixture(scope="module")
def lean_plan(tmp_path_factory):
  return plan_testing.lean_plan(tmp_path_factory.mktemp("scale"), TINY_TPU)


def test_the_plan_is_for_the_v5p_8(lean_plan):
  assert lean_plan["target"]["name"] == "v5p-8" and lean_plan["target"]["num_devices"] == 4
  lean = lean_plan["paths"]["lean"]
  assert lean["fits"] and 0 < lean["memory"]["total"] < lean_plan["target"]["hbm_bytes"]


def test_the_lean_step_holds_no_sequence_by_vocabulary_buffer(lean_plan):
  assert lean_plan["paths"]["lean"]["sequence_vocab_buffers"] == []


def test_the_lean_step_runs_no_vocabulary_sized_collective_inside_a_loop(lean_plan):
  vocab = lean_plan["paths"]["lean"]["collectives"]["vocabulary_sized"]
  assert vocab["in_loop_shapes"] == [], vocab
