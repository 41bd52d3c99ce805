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

"""The planner's targets and its refusals: every one exits 2 naming the key, the value and the fix, before any
model is built."""

import importlib.util
import os

import pytest

from maxtext_distill_plugin import cli
from maxtext_distill_plugin import errors
from maxtext_distill_plugin import plan
from maxtext_distill_plugin.planning import gpu
from maxtext_distill_plugin.planning import targets


def test_tpu_topologies_map_to_maxtext_devices_and_the_chip_figures():
  v5p = targets.parse("v5p-64")
  assert (v5p.platform, v5p.num_devices, v5p.hbm_bytes, v5p.peak_flops) == ("tpu", 32, 95 * 1024**3, 459e12)
  assert targets.parse("v5p-8", num_slices=2).num_devices == 8
  assert targets.parse("tpu7x-8").num_devices == 8  # two devices per chip, each with half its 192 GiB
  assert targets.parse("tpu7x-8").hbm_bytes == 96 * 1024**3
  assert targets.parse("v6e-8").maxtext_keys() == {"compile_topology": "v6e-8", "compile_topology_num_slices": "1"}
  host = targets.parse("cpu-4", hbm_gib=0.5)
  one_process = {"skip_jax_distributed_system": "True"}  # the host's devices, or compile-only GPUs
  assert (host.platform, host.num_devices, host.hbm_bytes, host.maxtext_keys()) == ("cpu", 4, 2**29, one_process)


def test_gpu_targets_are_hopper_gpus_in_hosts_of_eight():
  h100 = targets.parse("h100-16")
  assert (h100.platform, h100.num_devices, h100.hbm_bytes, h100.peak_flops) == ("gpu", 16, 84_929_347_584, 989e12)
  assert targets.parse("h200-4").hbm_bytes == 141_000_000_000
  assert targets.parse("h200-4").maxtext_keys() == {"skip_jax_distributed_system": "True"}
  assert [gpu.topology(n) for n in (1, 4, 8, 16, 64)] == ["1x1x1", "1x1x4", "1x1x8", "1x2x8", "1x8x8"]
  assert [targets.host_device_count(n) for n in ("cpu-4", "h100-16", "h200-8", "v5p-8")] == [4, 16, 8, None]
  config = gpu.target_config("h200")
  assert "device_memory_size: 141000000000" in config and "cuda_compute_capability { major: 9 minor: 0 }" in config


@pytest.mark.parametrize(
    "name, slices, fix",
    [
        ("v5p-7", 1, "name a TPU topology"),
        ("a3", 1, "h100-N / h200-N"),
        ("v5p-8", 0, "positive number"),
        ("h100-12", 1, "whole hosts of 8"),
        ("h200-8", 2, "whole hosts of 8"),
    ],
)
def test_unknown_targets_are_refused(name, slices, fix):
  with pytest.raises(errors.ConfigError, match=fix):
    targets.parse(name, num_slices=slices)


def _plan(capsys, monkeypatch, *args):
  for key in ("JAX_PLATFORMS", "TPU_SKIP_MDS_QUERY", "ALLOW_MULTIPLE_LIBTPU_LOAD", "XLA_FLAGS"):  # restored after
    monkeypatch.setenv(key, os.environ.get(key, ""))
  code = plan.main(["plan", "configs/distillation-cpu-tiny.yml", *args])
  return code, capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="this environment has libtpu")
def test_a_tpu_target_without_libtpu_exits_2_with_the_install_command(capsys, monkeypatch):
  code, err = _plan(capsys, monkeypatch, "compile_topology=v5p-8")
  assert code == errors.EXIT_USAGE
  assert "compile_topology='v5p-8'" in err and "pip install 'maxtext-distill-plugin[tpu-aot]'" in err


@pytest.mark.skipif(gpu.plugin_installed(), reason="this environment has JAX's CUDA plugin")
def test_a_gpu_target_without_the_cuda_plugin_exits_2_with_the_install_command(capsys, monkeypatch):
  code, err = _plan(capsys, monkeypatch, "compile_topology=h100-8")
  assert code == errors.EXIT_USAGE
  assert "compile_topology='h100-8'" in err and "pip install 'maxtext-distill-plugin[gpu-aot]'" in err


def test_the_target_and_the_flags_are_checked_first(capsys, monkeypatch):
  code, err = _plan(capsys, monkeypatch, "steps=5")
  assert code == errors.EXIT_USAGE and "compile_topology=v5p-8" in err
  code, err = _plan(capsys, monkeypatch, "compile_topology=cpu-4", "--paths", "lean,fast")
  assert code == errors.EXIT_USAGE and "'fast'" in err
  code, err = _plan(capsys, monkeypatch, "compile_topology=cpu-4", "--frobnicate", "1")
  assert code == errors.EXIT_USAGE and "--frobnicate" in err


def test_the_cli_hands_plan_to_the_planner(capsys, monkeypatch):
  for key in ("JAX_PLATFORMS", "TPU_SKIP_MDS_QUERY", "ALLOW_MULTIPLE_LIBTPU_LOAD"):
    monkeypatch.setenv(key, os.environ.get(key, ""))
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["maxtext-distill", "plan", "configs/distillation-cpu-tiny.yml", "steps=5"])
  assert exit_info.value.code == errors.EXIT_USAGE
  assert "maxtext-distill plan: compile_topology=None" in capsys.readouterr().err
