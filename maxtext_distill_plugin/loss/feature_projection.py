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

"""The learned linear map of ``distill_feature_projection=linear``: student features to the teacher's width.

One ``[D_student, D_teacher]`` matrix per aligned layer pair, ``kernel[L, D_s, D_t]``: layer ``l``'s student
activations ``s[l] [B, S, D_s]`` become ``s[l] @ kernel[l]`` before the feature distance. Per layer, not one shared
map, because each depth has its own activation statistics (Minitron, DistillKit and Tunix map each aligned layer
separately); the cost, ``L * D_s * D_t`` parameters, is small next to either model. There is no bias: the cosine
distance ignores a common scale but not a shift, and a bias would let the map match the teacher's mean instead of the
student learning it.

Initialisation: with equal widths the identity, so at step 0 ``linear`` gives the same loss as ``none``; otherwise a
random semi-orthogonal matrix per layer (orthonormal rows when ``D_s < D_t``, orthonormal columns when ``D_s > D_t``,
from the QR of a Gaussian matrix). Orthonormal rows make the map an isometry of the student's space, so at step 0 it
keeps the norms and angles of the student's features (neither the L2 nor the cosine distance starts skewed by the
initial scale), and the gradient reaches every direction of the student's features.
"""

import jax
import jax.numpy as jnp

PARAMS_KEY = "feature_projection"
_SEED_SALT = 0x5EED  # folded into init_weights_seed so the projection's draw differs from the model's


def init_kernel(seed: int, layers: int, d_student: int, d_teacher: int) -> jnp.ndarray:
  """``kernel[layers, d_student, d_teacher]`` in float32: the identity for equal widths, else semi-orthogonal."""
  if d_student == d_teacher:
    return jnp.broadcast_to(jnp.eye(d_student, dtype=jnp.float32), (layers, d_student, d_student))
  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), _SEED_SALT), layers)
  orthogonal = jax.nn.initializers.orthogonal()
  return jax.vmap(lambda key: orthogonal(key, (d_student, d_teacher), jnp.float32))(keys)


def init_params(seed: int, layers: int, d_student: int, d_teacher: int) -> dict:
  """The objective's parameter tree: ``{PARAMS_KEY: {"kernel": ...}}``."""
  return {PARAMS_KEY: {"kernel": init_kernel(seed, layers, d_student, d_teacher)}}


def project(kernel_LxDsxDt: jnp.ndarray, features_LxBxSxDs: jnp.ndarray) -> jnp.ndarray:
  """The student's features at the teacher's width, ``[L, B, S, D_t]`` in float32."""
  if kernel_LxDsxDt.shape[:2] != (features_LxBxSxDs.shape[0], features_LxBxSxDs.shape[-1]):
    raise ValueError(
        f"feature projection {kernel_LxDsxDt.shape} does not fit student features {features_LxBxSxDs.shape}:"
        " expected [layers, D_student, D_teacher] for the aligned layers."
    )
  return jnp.einsum("lbsd,lde->lbse", features_LxBxSxDs.astype(jnp.float32), kernel_LxDsxDt.astype(jnp.float32))
