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

"""What the planner compiles for: a TPU topology MaxText names (through libtpu), or the host's CPU devices.

``compile_topology=v5p-8`` (any name of MaxText's ``accelerator_to_spec_map``) compiles through libtpu for that
topology on this machine, no TPU needed. ``compile_topology=cpu-N`` compiles for N CPU devices of this host
(XLA's forced host device count): real compiles with the same step, mesh rules and HLO, used by the planner's
tests and to check a config cheaply; the CPU backend never runs out of memory, so its "HBM" is ``--hbm-gib``.
``compile_topology=h100-N`` / ``h200-N`` compiles for N NVIDIA GPUs through JAX's CUDA plugin (see :mod:`gpu`).
"""

import dataclasses
import importlib.util
import re

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.planning import gpu

HOST_PREFIX = "cpu-"
LIBTPU_INSTALL = "pip install 'maxtext-distill-plugin[tpu-aot]'  (or: pip install libtpu==0.0.50.1)"
GIB = 1024**3

# Per JAX device (a megacore chip is one device; a tpu7x chip is two): HBM bytes and peak dense bf16 FLOP/s,
# from the public TPU system-architecture pages.
_GENERATIONS = {
    "v4": (32 * GIB, 275e12),
    "v5e": (16 * GIB, 197e12),
    "v5litepod": (16 * GIB, 197e12),
    "v5p": (95 * GIB, 459e12),
    "v6e": (32 * GIB, 918e12),
    "tpu7x": (96 * GIB, 2307e12 / 2),
}


@dataclasses.dataclass(frozen=True)
class Target:
  """A compile target: ``name`` as given, ``platform`` ``tpu``, ``gpu`` or ``cpu``, its device count and per-device
  figures."""

  name: str
  platform: str
  num_devices: int
  hbm_bytes: int
  peak_flops: float
  num_slices: int = 1

  @property
  def is_tpu(self) -> bool:
    return self.platform == "tpu"

  def maxtext_keys(self) -> dict[str, str]:
    """The keys a run's configs get for this target. Off a TPU, MaxText counts the (host or compile-only) devices
    of this one process, so there is no distributed system to start (on a GPU host JAX would look for a
    coordinator)."""
    if not self.is_tpu:
      return {"skip_jax_distributed_system": "True"}
    return {"compile_topology": self.name, "compile_topology_num_slices": str(self.num_slices)}


def host_device_count(name: str) -> int | None:
  """The CPU device count this process must start JAX with for target ``name``: N for ``cpu-N`` and the GPU
  targets (MaxText sizes the batch and mesh from ``jax.devices()``, so the host mirrors the GPUs' count)."""
  found = re.fullmatch(rf"(?:{HOST_PREFIX[:-1]}|{'|'.join(gpu.generations())})-(\d+)", name)
  return int(found.group(1)) if found else None


def _parse_gpu(name: str, num_slices: int, override: int | None) -> Target | None:
  found = re.fullmatch(rf"({'|'.join(gpu.generations())})-(\d+)", name)
  if not found:
    return None
  count = int(found.group(2))
  if num_slices != 1 or count < 1 or (count > gpu.GPUS_PER_HOST and count % gpu.GPUS_PER_HOST):
    raise errors.ConfigError(
        "compile_topology", name, f"use {found.group(1)}-N with N GPUs: up to 8 on one host or whole hosts of 8."
    )
  memory, peak = gpu.figures(found.group(1))
  return Target(name, "gpu", count, override if override is not None else memory, peak)


def parse(name: str, num_slices: int = 1, hbm_gib: float | None = None) -> Target:
  """The target called ``name``; refuses an unknown one (exit 2). ``hbm_gib`` overrides the per-device memory."""
  if num_slices < 1:
    raise errors.ConfigError("compile_topology_num_slices", num_slices, "use a positive number of slices, e.g. 1.")
  override = None if hbm_gib is None else int(hbm_gib * GIB)
  host = re.fullmatch(rf"{HOST_PREFIX}(\d+)", name)
  if host:
    devices = int(host.group(1))
    if devices < 1 or num_slices != 1:
      raise errors.ConfigError("compile_topology", name, "use cpu-N with N >= 1 devices and one slice.")
    # No HBM: without --hbm-gib the host target reports memory and always fits.
    return Target(name, "cpu", devices, override if override is not None else 2**62, 0.0)
  on_gpu = _parse_gpu(name, num_slices, override)
  if on_gpu is not None:
    return on_gpu
  from maxtext.utils import accelerator_to_spec_map  # pylint: disable=import-outside-toplevel

  spec = accelerator_to_spec_map.UserFacingNameToSystemCharacteristics.get(name)
  if spec is None or spec.platform != "tpu":
    raise errors.ConfigError(
        "compile_topology",
        name,
        "name a TPU topology MaxText knows (v4-8, v5e-16, v5p-8, v5p-64, v6e-8, tpu7x-8, ...), h100-N / h200-N"
        " for NVIDIA GPUs, or cpu-N for this host's CPU devices.",
    )
  generation = name.split("-")[0]
  hbm, peak = _GENERATIONS[generation]
  return Target(
      name, "tpu", spec.devices_per_slice * num_slices, override if override is not None else hbm, peak, num_slices
  )


def require_compiler(target: Target) -> None:
  """A TPU target needs libtpu (the optional ``tpu-aot`` extra); refuse with the install line without it."""
  if target.is_tpu and importlib.util.find_spec("libtpu") is None:
    raise errors.ConfigError(
        "compile_topology", target.name, f"compiling for a TPU topology needs libtpu on this host: {LIBTPU_INSTALL}."
    )
  if target.platform == "gpu" and not gpu.plugin_installed():
    raise errors.ConfigError(
        "compile_topology",
        target.name,
        f"compiling for a GPU needs JAX's CUDA plugin on this host: {gpu.GPU_AOT_INSTALL}.",
    )


def mesh(target: Target, config):
  """The device mesh a run of ``config`` would have on ``target``, built by MaxText."""
  if target.is_tpu:
    from maxtext.trainers.pre_train import train_compile  # pylint: disable=import-outside-toplevel

    return train_compile.get_topology_mesh(config)
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  if target.platform == "gpu":
    return maxtext_utils.get_mesh_from_config(config, gpu.devices(target.name.split("-")[0], target.num_devices))
  devices = jax.devices()
  if len(devices) != target.num_devices:
    raise errors.ConfigError(
        "compile_topology",
        target.name,
        f"this process has {len(devices)} CPU devices; run the planner as its own process (it sets"
        " XLA_FLAGS=--xla_force_host_platform_device_count before JAX starts).",
    )
  return maxtext_utils.get_mesh_from_config(config, devices)
