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

"""The sampler's once-per-call weight gather: which mesh axes it drops and what the gathered copy costs per device."""

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from maxtext_distill_plugin.model import weight_gather


def test_only_the_fsdp_axes_are_dropped():
  # MaxText's spec of an MLP kernel: embed over the FSDP-like axes, mlp over fsdp_transpose and the tensor axes.
  spec = P(("fsdp", "context", "context_usp_ulysses", "expert"), "stage", ("fsdp_transpose", "tensor", "autoregressive"))
  assert weight_gather.without_fsdp(spec) == P("expert", "stage", ("tensor", "autoregressive"))
  assert weight_gather.without_fsdp(P("fsdp", None)) == P(None, None)
  assert weight_gather.without_fsdp(P(("data", "fsdp"), "tensor")) == P(None, "tensor")


class _Model(nnx.Module):

  def __init__(self):
    self.kernel = nnx.Param(jnp.zeros((8, 6), jnp.float32), sharding=("fsdp", "tensor"))
    self.scale = nnx.Param(jnp.zeros((6,), jnp.bfloat16), sharding=("tensor",))
    self.bias = nnx.Param(jnp.zeros((5,), jnp.float32))  # no sharding metadata: counted whole


def test_gathered_bytes_per_device():
  mesh = jax.sharding.AbstractMesh((4, 3), ("fsdp", "tensor"))
  with nnx.use_eager_sharding(False):  # metadata only: nothing is placed on the abstract mesh
    params = nnx.state(_Model(), nnx.Param)
  # kernel: 8*6*4 bytes split over tensor (3) only; scale: 6*2 over tensor; bias: 5*4 whole
  assert weight_gather.gathered_bytes(params, mesh) == 8 * 6 * 4 // 3 + 6 * 2 // 3 + 5 * 4
