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

"""Where the feature loss gets its activations: the attention ``out_projection`` sow.

MaxText 0.2.5's attention sows ``out_projection_activations`` when
``config.distill_beta > 0`` (the plugin sets that gate from its own section).
A host whose attention does not sow it gets a small wrapper around
``Attention.__call__`` that does, applied once and logged. Under
``scan_layers`` the sown values come back stacked on a leading layer axis.
"""

import inspect

from absl import logging
from flax import nnx
import jax.numpy as jnp

SOW_NAME = "out_projection_activations"
_patched = False


def host_sows_out_projection() -> bool:
  """Whether the installed attention module already sows the activations."""
  from maxtext.layers import attentions  # pylint: disable=import-outside-toplevel

  try:
    return SOW_NAME in inspect.getsource(attentions.Attention.__call__)
  except (OSError, TypeError):
    return False


def ensure_out_projection_sow() -> bool:
  """Patches the host attention to sow its output projection, only where needed.

  Returns:
    True when the patch was applied (now or earlier in this process).
  """
  global _patched  # pylint: disable=global-statement
  if _patched or host_sows_out_projection():
    return _patched
  from maxtext.layers import attentions  # pylint: disable=import-outside-toplevel

  original_call = attentions.Attention.__call__

  def call_and_sow(self, *args, **kwargs):
    result = original_call(self, *args, **kwargs)
    if getattr(self.config, "distill_beta", 0.0) > 0.0:
      out = result[0] if isinstance(result, tuple) else result
      self.sow(nnx.Intermediate, SOW_NAME, out)
    return result

  attentions.Attention.__call__ = call_and_sow
  _patched = True
  logging.info("maxtext-distill: patched %s.Attention to sow %s (the host does not).", attentions.__name__, SOW_NAME)
  return True


def pop_out_projection(model: nnx.Module) -> jnp.ndarray | None:
  """Removes every sown intermediate from ``model``; returns the stacked activations.

  Returns:
    ``[L, B, S, D]`` activations of all scanned layers (blocks concatenated in
    layer order), or None when nothing was sown.
  """
  intermediates = nnx.pop(model, nnx.Intermediate)
  found = []
  for path, leaf in nnx.to_flat_state(intermediates):
    if SOW_NAME in (str(p) for p in path):
      value = leaf.get_value() if hasattr(leaf, "get_value") else leaf
      found.append(value)
  if not found:
    return None
  stacked = []
  for value in found:
    # A sow stores a tuple of calls; under scan each entry is [L, B, S, D].
    array = value[-1] if isinstance(value, tuple) else value
    stacked.append(array if array.ndim == 4 else array[None])
  return jnp.concatenate(stacked, axis=0) if len(stacked) > 1 else stacked[0]


def select_layers(features_LxBxSxD: jnp.ndarray, layer_indices: list[int] | None) -> jnp.ndarray:
  """The chosen scanned layers, ``[len(indices), B, S, D]`` (all layers when None)."""
  if layer_indices is None:
    return features_LxBxSxD
  return jnp.take(features_LxBxSxD, jnp.asarray(layer_indices, jnp.int32), axis=0)
