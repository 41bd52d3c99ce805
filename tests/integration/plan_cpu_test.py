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

"""The planner on the CPU backend's own compile, 4 host devices in a subprocess (no libtpu): the table, the JSON,
fit and no-fit against a tiny HBM budget, exit 3, the largest-batch search, and collectives of a function whose
collectives are known.
"""

import json
import subprocess
import sys

import pytest

from maxtext_distill_plugin.planning import hlo
from tests.conftest import REPO, subprocess_env
from tests.integration import plan_testing

# Tiny student (1 layer) and teacher (2 layers) with sizes that collide with nothing: V=1000, S=192, D=64.
TINY = (
    "configs/distillation-cpu-tiny.yml",
    "teacher_overrides.load_parameters_path=/does/not/exist/items",
    "vocab_size=1000",
    "teacher_overrides.vocab_size=1000",
    "max_target_length=192",
    "distill_seq_chunk=32",
)
# The dense step's total per device is 8.96 MB at per_device_batch_size 1 and 16.69 MB at 2 (CPU compile): a budget
# between them makes the config's batch of 2 a "does not fit" and 1 the largest that fits.
BUDGET_GIB = 0.012


def test_plan_reports_does_not_fit_and_the_largest_batch_that_does(tmp_path):
  out = tmp_path / "plan.json"
  args = [*TINY, "compile_topology=cpu-4", "--paths", "dense", "--search", "dense", "--max-search-compiles", "2"]
  done = plan_testing.run_planner(*args, "--hbm-gib", str(BUDGET_GIB), json_path=out)
  assert done.returncode == 3, done.stderr[-3000:]
  assert "does not exist; the planner reads no weights" in done.stderr
  table = done.stdout
  for row in ("student params", "optimizer state", "teacher params", "temp", "total", "HBM margin", "fits"):
    assert row in table
  assert "DOES NOT FIT (dense on cpu-4)" in table
  assert "largest per_device_batch_size that fits (dense): 1 (exact)" in table

  plan = json.loads(out.read_text())
  budget = int(BUDGET_GIB * 1024**3)
  assert plan["target"] == {
      "name": "cpu-4", "platform": "cpu", "num_devices": 4, "hbm_bytes": budget, "peak_flops": 0.0, "num_slices": 1
  }  # fmt: skip
  dense = plan["paths"]["dense"]
  memory = dense["memory"]
  assert memory["total"] == memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
  assert memory["total"] > budget and not dense["fits"] and not plan["fits"]
  assert memory["student_params"] == plan_testing.params_per_device(layers=1)
  assert memory["teacher_params"] == plan_testing.params_per_device(layers=2)
  assert 0 <= memory["optimizer_state"] - 2 * memory["student_params"] <= 64  # Adam's two moments and its counts
  search = plan["largest_batch"]["dense"]
  assert (search["largest_fitting"], search["first_not_fitting"], search["exact"]) == (1, 2, True)
  assert search["tried"]["1"]["fits"] and search["tried"]["1"]["total_bytes"] <= budget
  assert search["tried"]["2"]["total_bytes"] == memory["total"]
  # The dense step holds the student's logits: 8 rows over 4 devices, [2, S, V] per device.
  assert "f32[2,192,1000]" in dense["sequence_vocab_buffers"]
  assert dense["collectives"]["by_kind"]["all-gather"]["count"] > 0
  assert (
      plan["flops_per_device"]["total"]
      == plan["flops_per_device"]["student_fwd_bwd"] + plan["flops_per_device"]["teacher_fwd"]
  )
  assert plan["step_seconds_lower_bound"] is None  # no stated peak for the host's CPU
  assert plan["host"]["peak_rss_bytes"] > 0
  # docs/scale.md's table is made from such reports by one command.
  table = subprocess.run(
      [sys.executable, "tools/scale_table.py", str(tmp_path)], cwd=REPO, capture_output=True, text=True, check=True
  ).stdout.splitlines()
  assert len(table) == 3 and table[2].startswith("| plan | ")
  cells = [c.strip() for c in table[2].strip("|").split("|")]
  assert cells[2:6] == ["cpu-4", "2 x 192", "-", f"{memory['total'] / 1024**3:.2f} / {memory['temp'] / 1024**3:.2f}"]
  assert cells[7:9] == ["-", "- / 1"]  # no offline step or sampler; no lean search; dense's largest batch, exact


def test_the_sampler_keeps_its_kv_cache_with_its_rows_and_no_prefill_logits(tmp_path):
  # MaxText's inference rules replicate the cache's batch axis; on the training mesh that made every decode step
  # gather the autoregressive keys and values of all 8 rows (4 all-gathers per layer and token inside the loop).
  # And MaxText's prefill returns the logits of every prompt position, [2, 176, 1000] float32 per device here.
  out, hlo_dir = tmp_path / "plan.json", tmp_path / "hlo"
  on_policy = ("use_sft=True", "sft_train_on_completion_only=True", "packing=False", "distill_on_policy_fraction=0.5")
  args = [*TINY, *on_policy, "distill_sample_max_new_tokens=16", "compile_topology=cpu-4", "--paths", "sampler"]
  done = plan_testing.run_planner(*args, "--search", "none", "--hlo-dir", str(hlo_dir), json_path=out)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  text = (hlo_dir / "sampler.hlo.txt").read_text()
  prompt_bucket, vocab = 192 - 16, 1000
  assert not [s for s in hlo.shapes_in(text) if prompt_bucket in s[1] and vocab in s[1]]
  found, _ = hlo.collectives(text)
  in_loop = [c for c in found if c.in_loop]
  head_dim = 16  # the tiny config's; a key or value tensor ends in it, attention scores do not
  assert not [c for c in in_loop if c.shapes[0][1][-1] == head_dim], in_loop
  gathers = json.loads(out.read_text())["paths"]["sampler"]["collectives"]["by_kind"]["all-gather"]
  looped = [c for c in in_loop if c.kind == "all-gather"]
  assert gathers["in_loop_count"] == sum(c.count for c in looped)
  assert gathers["in_loop_bytes"] == sum(c.bytes * c.count for c in looped)


# psum of a loop-carried value inside a 7-trip fori_loop, then one tiled all-gather, over 4 devices.
_KNOWN_COLLECTIVES = """
import json
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from maxtext_distill_plugin.planning import hlo

mesh = Mesh(jax.devices(), ("x",))

def body(x):
  looped = jax.lax.fori_loop(0, 7, lambda i, c: jax.lax.psum(c * (i + 1).astype(c.dtype), "x"), x)
  return jax.lax.all_gather(looped, "x", tiled=True)

fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("x"), out_specs=P(), check_vma=False))
arg = jax.ShapeDtypeStruct((32, 24), jnp.float32, sharding=NamedSharding(mesh, P("x")))
found, unknown = hlo.collectives(fn.lower(arg).compile().as_text())
print(json.dumps({"found": sorted([c.kind, c.count, c.bytes, c.in_loop] for c in found), "unknown": unknown}))
"""


def test_collectives_of_a_jitted_function_with_a_loop():
  env = {**subprocess_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  done = subprocess.run(
      [sys.executable, "-c", _KNOWN_COLLECTIVES], cwd=REPO, env=env, capture_output=True, text=True, check=True
  )
  result = json.loads(done.stdout.strip().splitlines()[-1])
  # Each device reduces its [8, 24] float32 shard 7 times, then gathers the [32, 24] whole once.
  assert result == {"found": [["all-gather", 1, 32 * 24 * 4, False], ["all-reduce", 7, 8 * 24 * 4, True]], "unknown": 0}


@pytest.mark.slow  # the lean step and the floor with two teachers: 22 s idle, about 3 min on 2 loaded cores
def test_plan_counts_every_teacher_of_a_teachers_list(tmp_path):
  yaml_path = plan_testing.teachers_yaml(tmp_path)
  out = tmp_path / "teachers.json"
  args = [yaml_path, "vocab_size=1000", "max_target_length=64", "distill_seq_chunk=32", "compile_topology=cpu-4"]
  done = plan_testing.run_planner(*args, "--paths", "lean,floor", "--search", "none", json_path=out)
  assert done.returncode == 0, done.stderr[-3000:]
  plan = json.loads(out.read_text())

  small, deep = (plan_testing.params_per_device(layers) for _, layers in plan_testing.TEACHERS)
  assert [(t["name"], t["layers"], t["params_bytes"]) for t in plan["teachers"]] == [
      ("small", 2, small), ("deep", 3, deep)
  ]  # fmt: skip
  memory = plan["paths"]["lean"]["memory"]
  assert memory["teacher_params"] == small + deep
  # XLA's own count of the step's arguments holds both teachers: beyond the state and the teachers only the batch's
  # int32 columns ([2, 64] per device each) and a few scalars remain, a few kB where one teacher alone is ~200 kB.
  # The floor runs every teacher's forward too, so it takes both teachers as well.
  state = memory["student_params"] + memory["optimizer_state"] + memory["teacher_params"]
  for path in ("lean", "floor"):
    assert 2 * 64 * 4 * 2 <= plan["paths"][path]["memory"]["argument"] - state <= 8 * 1024, path
  lines = done.stdout.splitlines()
  assert any(line.split()[:2] == ["small", f"{small / 1024**2:.2f}"] for line in lines), done.stdout
  assert any(line.split()[:2] == ["deep", f"{deep / 1024**2:.2f}"] for line in lines), done.stdout

  # Each teacher's forward on the whole batch: 2 rows of 64 positions per device.
  flops = plan["flops_per_device"]
  expected = {name: plan_testing.forward_flops(layers, 2 * 64, 64) for name, layers in plan_testing.TEACHERS}
  assert flops["teacher_fwd_by_name"] == pytest.approx(expected, rel=1e-9)
  assert flops["teacher_fwd"] == pytest.approx(sum(expected.values()), rel=1e-9)
  assert flops["total"] == pytest.approx(flops["student_fwd_bwd"] + flops["teacher_fwd"], rel=1e-12)
  table = subprocess.run(
      [sys.executable, "tools/scale_table.py", str(tmp_path)], cwd=REPO, capture_output=True, text=True, check=True
  ).stdout
  assert "| default (2x64) + default (3x64) -> default (1x64) | cpu-4 |" in table, table
