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

"""The sampler's weights gathered once per sampling call instead of once per generated token.

Training shards the weights over the FSDP axes of the mesh (``fsdp``, ``fsdp_transpose``, the context axes), and a
matmul all-gathers its weight where it is used. Inside the sampler's decode loop that is once per layer per generated
token: on v5p-8 a 16-token sampling call of a Llama-3.2-1B-shaped student moved 42 GB of all-gathers per chip. Here
the sampler constrains its parameters to be whole over those axes (the tensor, expert and stage axes are kept) before
the loop, so XLA gathers each weight once per call and the loop reads the gathered copy (measured by the planner on
that case: all-gathers 42.09 GB -> 3.07 GB per call, none vocabulary-sized inside a loop; temp 5.44 -> 6.84 GiB).

The gathered copy costs memory while sampling, so it is taken only when it is at most :data:`MEMORY_SHARE` of the
device's memory as the runtime reports it; where the runtime reports none (the CPU, an ahead-of-time compile for a TPU
topology) it is taken, and the planner's figures include it.
"""

import math

from flax import nnx
import jax
from jax.sharding import NamedSharding, PartitionSpec

# Mesh axes over which MaxText's rules shard weights FSDP-style (data-parallel axes holding weight shards).
FSDP_AXES = frozenset(
    {"data", "fsdp", "fsdp_transpose", "context", "context_usp_ulysses", "context_autoregressive", "diloco"}
)


MEMORY_SHARE = 0.25


def without_fsdp(spec) -> PartitionSpec:
  """``spec`` (mesh axes per dimension) with the FSDP axes removed: those dimensions become whole."""

  def keep(entry):
    if entry is None:
      return None
    names = (entry,) if isinstance(entry, str) else tuple(entry)
    kept = tuple(name for name in names if name not in FSDP_AXES)
    return None if not kept else kept[0] if len(kept) == 1 else kept

  return PartitionSpec(*(keep(entry) for entry in spec))


def _specs(params: nnx.State) -> dict:
  return nnx.to_pure_dict(nnx.get_partition_spec(params))


def _is_spec(x) -> bool:
  return isinstance(x, PartitionSpec)


def gathered_bytes(params: nnx.State, mesh) -> int:
  """Bytes per device of ``params`` once whole over the FSDP axes (arrays or abstract values alike)."""
  total = 0

  def add(value, spec):
    nonlocal total
    shards = 1
    if isinstance(spec, PartitionSpec):
      for entry in without_fsdp(spec):
        for name in () if entry is None else (entry,) if isinstance(entry, str) else entry:
          shards *= int(mesh.shape[name])
    total += math.prod(value.shape) * value.dtype.itemsize // shards

  jax.tree.map(add, nnx.to_pure_dict(params), _specs(params), is_leaf=_is_spec)
  return total


def fits(params: nnx.State, mesh) -> bool:
  """Whether the gathered copy is within :data:`MEMORY_SHARE` of a device's memory (True where it is not reported)."""
  try:
    limit = (mesh.devices.flat[0].memory_stats() or {}).get("bytes_limit")
  except (AttributeError, NotImplementedError, RuntimeError):  # no runtime behind an ahead-of-time topology device
    limit = None
  return limit is None or gathered_bytes(params, mesh) <= MEMORY_SHARE * limit


def gathered(params: nnx.State, mesh) -> nnx.State:
  """``params`` (an ``nnx.State`` of MaxText parameters, inside a traced function) constrained whole over the FSDP
  axes; parameters without sharding metadata are left as they are."""
  specs, values = _specs(params), nnx.to_pure_dict(params)

  def constrain(value, spec):
    if not isinstance(spec, PartitionSpec):
      return value
    return jax.lax.with_sharding_constraint(value, NamedSharding(mesh, without_fsdp(spec)))

  nnx.replace_by_pure_dict(params, jax.tree.map(constrain, values, specs, is_leaf=_is_spec))
  return params
