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

"""The planner's accounting of several teachers (``teachers:``) without compiling: each teacher's abstract state and
its parameters per device, and FLOPs that count every teacher's forward (float64 references)."""

from flax.linen import partitioning as nn_partitioning
import jax
import pytest

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.planning import abstract
from maxtext_distill_plugin.planning import flops
from maxtext_distill_plugin.planning import programs
from maxtext_distill_plugin.planning import targets
from tests.integration import plan_testing


@pytest.fixture(scope="module")
def two_teachers(tmp_path_factory):
  yaml_path = plan_testing.teachers_yaml(tmp_path_factory.mktemp("teachers"))
  return config.build(["train_distill", yaml_path, "vocab_size=1000", "max_target_length=64"], plan=True)


def test_every_teacher_has_an_abstract_state_and_its_parameters_counted(two_teachers):
  devices = len(jax.devices())
  mesh = targets.mesh(targets.parse(f"cpu-{devices}"), two_teachers.student)
  run = abstract.build(two_teachers, mesh, None)
  assert isinstance(run.teacher_graphdef, tuple) and len(run.teacher_state) == 2
  expected = {name: plan_testing.params_per_device(layers, devices=devices) for name, layers in plan_testing.TEACHERS}
  assert abstract.teacher_params(run) == expected
  assert abstract.state_parts(run)["teacher_params"] == sum(expected.values())


def test_flops_count_every_teachers_forward(two_teachers):
  found = flops.per_device(two_teachers)
  rows = int(two_teachers.student.per_device_batch_size)
  expected = {name: plan_testing.forward_flops(layers, rows * 64, 64) for name, layers in plan_testing.TEACHERS}
  assert found["teacher_fwd_by_name"] == pytest.approx(expected, rel=1e-9)
  assert found["teacher_fwd"] == pytest.approx(sum(expected.values()), rel=1e-9)
  assert found["total"] == pytest.approx(found["student_fwd_bwd"] + found["teacher_fwd"], rel=1e-12)


def test_the_lean_step_finishes_the_teachers_before_the_students_forward(two_teachers):
  """Row 07 of docs/scale.md: without a barrier XLA ran the student's forward first on a v5p, so the student's saved
  activations and bfloat16 weight copies stayed live through the MoE teacher's forward (lean temp 18.50 GiB vs dense
  15.71). The step ties the teachers' outputs to the student's parameters in one optimization barrier."""
  devices = len(jax.devices())
  configs = two_teachers
  run = abstract.build(configs, targets.mesh(targets.parse(f"cpu-{devices}"), configs.student), None)
  jitted, args = programs.train_step(configs, run, "lean")
  with jax.set_mesh(run.mesh), nn_partitioning.axis_rules(configs.student.logical_axis_rules):
    text = jitted.lower(*args).as_text()
  barriers = [line for line in text.splitlines() if "stablehlo.optimization_barrier" in line]
  assert len(barriers) == 1, barriers
  # Its operands: both teachers' hidden states [B, S, D] and unembeddings, and the student's parameters.
  rows, seq, emb = int(configs.student.per_device_batch_size) * devices, 64, 64
  assert barriers[0].count(f"tensor<{rows}x{seq}x{emb}xf32>") >= 2, barriers[0]
