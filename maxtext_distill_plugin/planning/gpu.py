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

"""NVIDIA GPU targets without a GPU: ``compile_topology=h100-N`` / ``h200-N``.

JAX's CUDA PJRT plugin (``jax-cuda12-plugin`` / ``jax-cuda12-pjrt``, the ``gpu-aot`` extra) creates compile-only
GPU devices from a topology string (partitions x hosts x GPUs per host) and a target description (XLA's
``GpuTargetConfigProto`` in text form: the device's limits, memory and compute capability) instead of asking a GPU
for them, so XLA's GPU compiler plans the program on this machine. MaxText's own GPU AOT path cannot do this: it
takes the host's ``jax.devices()``.
"""

import importlib.util

GPUS_PER_HOST = 8
GPU_AOT_INSTALL = (
    "pip install 'maxtext-distill-plugin[gpu-aot]'  (or: pip install jax-cuda12-plugin==0.12.0.1"
    " jax-cuda12-pjrt==0.12.0.1 --no-deps)"
)

# Shared by both Hopper parts (sm_90, 132 SMs): the limits XLA's cost model and tiling read.
_HOPPER_LIMITS = """
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  cuda_compute_capability { major: 9 minor: 0 }
"""

# Per GPU: memory in bytes (H100 SXM as CUDA reports its 80 GB; H200's 141 GB as sold), HBM bandwidth in B/s,
# dense bf16 peak in FLOP/s, and the name CUDA gives the device.
_GPUS = {
    "h100": (84_929_347_584, 3.35e12, 989e12, "NVIDIA H100 80GB HBM3"),
    "h200": (141_000_000_000, 4.8e12, 989e12, "NVIDIA H200"),
}


def generations() -> tuple[str, ...]:
  return tuple(_GPUS)


def figures(generation: str) -> tuple[int, float]:
  """``(memory bytes, peak bf16 FLOP/s)`` of one GPU."""
  memory, _, peak, _ = _GPUS[generation]
  return memory, peak


def target_config(generation: str) -> str:
  """XLA's ``GpuTargetConfigProto`` (text format) for one GPU of ``generation``."""
  memory, bandwidth, _, description = _GPUS[generation]
  return (
      f"gpu_device_info {{{_HOPPER_LIMITS}  memory_bandwidth: {int(bandwidth)}\n  device_memory_size: {memory}\n}}\n"
      'platform_name: "CUDA"\n'
      "runtime_version { major: 12 minor: 8 }\n"
      "dnn_version_info { major: 9 minor: 8 }\n"
      f'device_description_str: "{description}"\n'
  )


def topology(num_devices: int) -> str:
  """One partition of whole hosts of 8 GPUs (or one host with fewer): ``1 x hosts x GPUs per host``."""
  hosts = max(1, num_devices // GPUS_PER_HOST)
  return f"1x{hosts}x{num_devices // hosts}"


def plugin_installed() -> bool:
  if importlib.util.find_spec("jax_plugins") is None:  # the namespace package JAX's plugins install into
    return False
  return any(importlib.util.find_spec(f"jax_plugins.xla_cuda{v}") is not None for v in (12, 13))


def devices(generation: str, num_devices: int) -> list:
  """Compile-only CUDA devices for ``num_devices`` GPUs of ``generation`` (no GPU needed)."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  desc = topologies.get_topology_desc(
      generation, "cuda", target_config=target_config(generation), topology=topology(num_devices)
  )
  return list(desc.devices)


def cross_compiling():
  """The context a GPU program is lowered in. MaxText's GPU attention kernels come from tokamax, which checks that the
  device it traces for supports them and, the CPU host being the default device here, refuses ("Not supported on
  cpu"); its ``cross_compile`` option is the documented way to lower for hardware the host does not have."""
  import contextlib  # pylint: disable=import-outside-toplevel

  if importlib.util.find_spec("tokamax") is None:
    return contextlib.nullcontext()
  from tokamax import config as tokamax_config  # pylint: disable=import-outside-toplevel

  return tokamax_config.cross_compile(True)
