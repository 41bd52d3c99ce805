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

"""Scale-out on the CPU: a sharded 4-device mesh gives the same losses as one device on the same global batch."""

import collections
import re

import numpy as np
import pytest

from tests.conftest import TINY_YAML, read_metrics, run_cli, subprocess_env

_COMPARED = ("distill/total_loss", "distill/hard_loss", "distill/soft_loss", "distill/teacher_loss", "grad_norm")


def _run(tmp_path, name, devices, teacher_checkpoint, *extra, xla_flags: str = ""):
  env = subprocess_env()
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {xla_flags}"
  metrics = tmp_path / f"{name}.jsonl"
  proc = run_cli(
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      f"run_name={name}",
      f"metrics_file={metrics}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      "steps=3",
      "enable_checkpointing=False",
      *extra,
      env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {r["step"]: r for r in read_metrics(metrics) if "distill/total_loss" in r}


# Lean tiles of 8 positions x 256 of the 512 columns: 4 x 2 loop iterations, and tiles no other weight shares a
# dimension with (the tiny model's widest is 128), so a vocabulary-sized collective is told apart by its shape.
_LEAN_TILES = ("distill_seq_chunk=8", "distill_vocab_chunk=256")
_VOCAB_TILE = 256
_WHILE_BODY = re.compile(r"\bwhile\(.*?body=%?([\w.\-]+)")
_CALLED = re.compile(r"(?:body|condition|to_apply|calls|true_computation|false_computation)=%?([\w.\-]+)")
_GATHER = re.compile(r"= \w+\[([\d,]*)\]\S* all-gather(?:-start)?\(")


def _gathers_inside_loops(hlo: str) -> list[str]:
  """Result shapes of the all-gathers in a while body (or anything a while body calls) of an optimized HLO module."""
  computations, name = {}, None
  for line in hlo.splitlines():
    if line and not line.startswith(" ") and line.rstrip().endswith("{"):
      name = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
      computations[name] = []
    elif name is not None:
      computations[name].append(line)
  texts = {name: "\n".join(lines) for name, lines in computations.items()}
  inside, pending = set(), [body for text in texts.values() for body in _WHILE_BODY.findall(text)]
  while pending:
    current = pending.pop()
    if current in texts and current not in inside:
      inside.add(current)
      pending += _CALLED.findall(texts[current])
      for branches in re.findall(r"branch_computations=\{([^}]*)\}", texts[current]):
        pending += [branch.strip().lstrip("%") for branch in branches.split(",")]
  return [m.group(1) for c in inside for line in computations[c] for m in [_GATHER.search(line)] if m]


# Each mesh runs one loss path (the lean one is the CPU default), so both are checked sharded at the cost of two runs.
@pytest.mark.parametrize(
    "sharding,loss_impl",
    [
        (("ici_fsdp_parallelism=4",), "chunked"),
        (("ici_data_parallelism=2", "ici_fsdp_parallelism=1", "ici_tensor_parallelism=2"), "dense"),
    ],
    ids=["fsdp-chunked", "data-tensor-dense"],
)
def test_sharded_mesh_matches_single_device(tmp_path, teacher_checkpoint, sharding, loss_impl):
  """On the FSDP mesh the lean step also gathers each unembedding once per step, outside its tile loops."""
  features = ("distill_beta=0.5", "distill_layer_indices=[0]", f"distill_loss_impl={loss_impl}")
  features += _LEAN_TILES if loss_impl == "chunked" else ()
  dump = tmp_path / "four-hlo"
  flags = f"--xla_dump_to={dump} --xla_dump_hlo_module_re=.*train_step.*"
  single = _run(tmp_path, "one", 1, teacher_checkpoint, "per_device_batch_size=8", *features)
  sharded = _run(
      tmp_path, "four", 4, teacher_checkpoint, "per_device_batch_size=2", *features, *sharding, xla_flags=flags
  )
  if loss_impl == "chunked":
    (path,) = dump.glob("*jit_train_step*after_optimizations.txt")
    in_loops = _gathers_inside_loops(path.read_text(encoding="utf-8"))
    assert in_loops, "the decoder's scanned layers gather their FSDP-sharded weights in a loop: the parse found none"
    vocabulary_sized = [dims for dims in in_loops if max(map(int, dims.split(","))) >= _VOCAB_TILE]
    assert not vocabulary_sized, f"unembedding tiles all-gathered inside a tile loop: {vocabulary_sized}"
  assert sorted(single) == sorted(sharded) == [1, 2, 3]
  for step in single:
    for name in _COMPARED + ("distill/out_proj_feature_loss",):
      np.testing.assert_allclose(sharded[step][name], single[step][name], rtol=2e-5, err_msg=f"{name} step {step}")


def test_two_processes_log_what_one_process_logs_on_the_same_global_batch(tmp_path, teacher_checkpoint):
  """Two JAX processes (gloo CPU collectives) vs one process with two devices: (sum, count) aggregation."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  import portpicker  # pylint: disable=import-outside-toplevel

  from tests.conftest import REPO  # pylint: disable=import-outside-toplevel

  port = portpicker.pick_unused_port()
  args = [
      sys.executable,
      "-m",
      "maxtext_distill_plugin",
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      "run_name=multi",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      "steps=3",
      "enable_checkpointing=False",
      "distill_alpha=0.6",
      "distill_beta=0.3",
      "distill_layer_indices=[0]",
  ]
  procs = []
  for process_id in range(2):
    env = subprocess_env()
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
    log = open(tmp_path / f"p{process_id}.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
    procs.append((
        subprocess.Popen(  # pylint: disable=consider-using-with
            [*args, f"metrics_file={tmp_path / f'p{process_id}.jsonl'}"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ),
        log,
    ))
  for proc, log in procs:
    proc.wait(timeout=600)
    log.close()
    assert proc.returncode == 0, (tmp_path / "p0.log").read_text(encoding="utf-8")[-3000:]
  assert "joined 2 JAX processes" in (tmp_path / "p1.log").read_text(encoding="utf-8")
  assert not (tmp_path / "p1.jsonl").exists(), "only process 0 writes metrics"
  multi = {r["step"]: r for r in read_metrics(tmp_path / "p0.jsonl") if "distill/total_loss" in r}
  single = _run(
      tmp_path, "single", 2, teacher_checkpoint, "distill_alpha=0.6", "distill_beta=0.3", "distill_layer_indices=[0]"
  )
  assert sorted(multi) == sorted(single) == [1, 2, 3]
  for step in single:
    for name in _COMPARED + ("distill/out_proj_feature_loss", "distill/kl_div_T1"):
      np.testing.assert_allclose(multi[step][name], single[step][name], rtol=1e-6, err_msg=f"{name} step {step}")


_COLLECTIVE = re.compile(r"\s(all-gather|all-to-all|collective-permute|all-reduce|reduce-scatter)(?:-start)?\(")


def _train_step_collectives(dump_dir) -> collections.Counter:
  """Collective instructions in the optimized HLO of the compiled train step that XLA dumped."""
  (path,) = dump_dir.glob("*jit_train_step*after_optimizations.txt")
  return collections.Counter(m.group(1) for m in _COLLECTIVE.finditer(path.read_text(encoding="utf-8")))


def test_gradient_accumulation_adds_no_collectives_on_a_data_parallel_mesh(tmp_path, teacher_checkpoint):
  """Accumulation 2 on a 4-device data mesh compiles to the collectives of accumulation 1 (one all-reduce: the
  gradient and metric reduction) and gives its losses on the same global batch of 8 rows."""
  mesh = ("ici_data_parallelism=4", "ici_fsdp_parallelism=1")
  steps, collectives = {}, {}
  for accumulation, per_device in ((1, 2), (2, 1)):
    name = f"accum{accumulation}"
    dump = tmp_path / f"{name}-hlo"
    flags = f"--xla_dump_to={dump} --xla_dump_hlo_module_re=.*train_step.*"
    extra = (f"per_device_batch_size={per_device}", f"gradient_accumulation_steps={accumulation}")
    steps[accumulation] = _run(tmp_path, name, 4, teacher_checkpoint, *mesh, *extra, xla_flags=flags)
    collectives[accumulation] = _train_step_collectives(dump)
  assert collectives[1] == collections.Counter({"all-reduce": 1}), collectives[1]
  assert collectives[2] == collectives[1], collectives[2]
  for step in steps[1]:
    for name in _COMPARED:
      np.testing.assert_allclose(steps[2][step][name], steps[1][step][name], rtol=2e-5, err_msg=f"{name} step {step}")


def test_per_device_batch_below_one_trains_on_micro_batch_size_to_train_on_rows(tmp_path, teacher_checkpoint):
  """per_device_batch_size=0.5 on 4 devices: MaxText loads 4 rows (one a device) and trains on the first 2, so
  each step's loss averages 2 x 32 tokens (synthetic rows have no padding)."""
  steps = _run(tmp_path, "half", 4, teacher_checkpoint, "per_device_batch_size=0.5", "log_period=1")
  assert sorted(steps) == [1, 2, 3]
  for record in steps.values():
    np.testing.assert_allclose(record["perf/tokens_per_s"] * record["perf/step_time_s"], 2 * 32, rtol=1e-9)
