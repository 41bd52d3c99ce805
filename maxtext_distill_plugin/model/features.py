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

MaxText 0.2.5's ``Attention`` sows ``out_projection_activations`` when
``config.distill_beta > 0`` (the plugin sets that gate from its own section);
two attentions override ``__call__`` and do not: MLA (``attention_mla.MLA``,
DeepSeek) and GPT-3's own ``Gpt3MultiHeadAttention``. Every attention class in :data:`SOW_HOSTS` whose own
``__call__`` lacks the sow gets a small wrapper that adds it, applied once and
logged; the installed files are not edited.

:data:`SOWING_DECODERS` are the decoder blocks whose every layer runs one of
these attentions (each is checked end to end by ``decoder_blocks_test.py``);
:data:`NOT_SOWING` says for each other block why it cannot give one activation
per layer.

Decoders keep their layers in one or more groups, each scanned or not:
``layers`` (one stack), ``layers/layers_<i>`` (a scanned cycle of sub-layers:
Gemma 3, gpt-oss), ``layers_remainder`` (Gemma 3's layers past the last whole
cycle), ``dense_layers`` + ``moe_layers`` (DeepSeek). :func:`out_projection_layers`
returns the activations in depth order across the groups, which is how
``distill_layer_indices`` count.
"""

import importlib
import inspect
import re

from absl import logging
from flax import nnx
import jax.numpy as jnp

SOW_NAME = "out_projection_activations"

# (module, class) of every attention whose output projection the feature loss reads.
SOW_HOSTS = (
    ("maxtext.layers.attentions", "Attention"),
    ("maxtext.layers.attention_mla", "MLA"),
    ("maxtext.models.gpt3", "Gpt3MultiHeadAttention"),
)

# Decoder blocks whose every layer runs one SOW_HOSTS attention (checked by decoder_blocks_test.py).
SOWING_DECODERS = frozenset({
    "default",
    "llama2",
    "llama4",
    "mistral",
    "mixtral",
    "olmo3",
    "deepseek",
    "envy",
    "gemma",
    "gemma2",
    "gemma3",
    "gpt3",
    "gpt_oss",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "qwen3_custom_moe",
})

_LINEAR_ATTENTION = (
    "three of every four layers run Gated DeltaNet linear attention, which has no attention out_projection, so"
    " only every fourth layer could give an activation"
)
# The other blocks of MaxText 0.2.5's DecoderBlockType, and why the feature loss cannot read them.
NOT_SOWING = {
    "simple": "its layers have no attention (one dense projection each)",
    "simple_mlp": "its layers have no attention (an MLP each)",
    "qwen3_next": _LINEAR_ATTENTION,
    "qwen3_5": _LINEAR_ATTENTION,
    "deepseek4": (
        "MaxText 0.2.5 cannot load its checkpoints through load_parameters_path (from_pretrained: 'Resource axis:"
        " o_groups ... is not found in mesh')"
    ),
    "gemma4": (
        "its scanned blocks run the local layers in an inner scan that does not hand out what they sow, so only the"
        " global layer of each block gives an activation"
    ),
    "gemma4_small": "MaxText builds it unscanned only (scan_layers=False), and the feature loss reads the scan axis",
}

_patched: set[str] = set()


def _host_classes():
  for module_name, class_name in SOW_HOSTS:
    yield f"{module_name}.{class_name}", getattr(importlib.import_module(module_name), class_name)


def class_sows(cls) -> bool:
  """Whether ``cls`` defines its own ``__call__`` and that call sows the activations."""
  call = cls.__dict__.get("__call__")
  if call is None:
    return False
  try:
    return SOW_NAME in inspect.getsource(call)
  except (OSError, TypeError):
    return False


def host_sows_out_projection() -> bool:
  """Whether every attention class of :data:`SOW_HOSTS` sows the activations without a patch."""
  return all(class_sows(cls) for _, cls in _host_classes())


def _wrap(original_call):
  def call_and_sow(self, *args, **kwargs):
    result = original_call(self, *args, **kwargs)
    if getattr(self.config, "distill_beta", 0.0) > 0.0:
      out = result[0] if isinstance(result, tuple) else result
      self.sow(nnx.Intermediate, SOW_NAME, out)
    return result

  call_and_sow.__wrapped__ = original_call
  return call_and_sow


def ensure_out_projection_sow() -> bool:
  """Wraps each :data:`SOW_HOSTS` attention that does not sow its output projection; once per process.

  Returns:
    True when some class is patched (now or earlier in this process).
  """
  for name, cls in _host_classes():
    if name in _patched or class_sows(cls):
      continue
    # A subclass that inherits __call__ (no own entry) runs the patched parent: wrap only own calls.
    if "__call__" not in cls.__dict__:
      continue
    cls.__call__ = _wrap(cls.__dict__["__call__"])
    _patched.add(name)
    logging.info("maxtext-distill: patched %s to sow %s (the host does not).", name, SOW_NAME)
  return bool(_patched)


def sow_refusal(config) -> str | None:
  """Why a model built from ``config`` cannot give the feature loss one activation per layer, or None.

  Config-only, so :func:`config.cross_check` can refuse before any model is built.
  """
  block = getattr(config.decoder_block, "value", config.decoder_block)
  if block not in SOWING_DECODERS:
    why = NOT_SOWING.get(block, "it is not known to run a sowing attention in every layer")
    return f"decoder_block={block!r} cannot give the feature loss an attention output per layer: {why}"
  if block == "deepseek" and getattr(config, "use_batch_split_schedule", False):
    return "use_batch_split_schedule=True runs DeepSeek's attention outside the MLA module, which cannot sow"
  return None


def _group_key(group: str):
  """Depth order of a decoder's layer groups: dense before MoE (DeepSeek), remainder last (Gemma 3), then by the
  first layer number in the name (DeepSeek's engram chunks ``dense_layers_<a>_<b>``)."""
  rank = 2 if "remainder" in group else 1 if group.startswith("moe") else 0
  numbers = re.findall(r"\d+", group)
  return rank, int(numbers[0]) if numbers else -1, group


def _sub_index(path: tuple) -> int:
  """The sub-layer of a scanned cycle (``layers_<i>`` below the group), or -1 for a plain stack."""
  for key in path[2:]:
    match = re.fullmatch(r"layers_(\d+)", str(key))
    if match:
      return int(match.group(1))
  return -1


def out_projection_layers(flat_sown: list) -> jnp.ndarray | None:
  """The decoder layers' activations in depth order across groups, ``[L, B, S, D]``, or None when none was sown.

  Args:
    flat_sown: ``(path, value)`` pairs of the sown ``nnx.Intermediate`` state; only ``decoder/...``
      paths ending in :data:`SOW_NAME` are read (an MTP block's layers are not decoder layers).
  """
  groups: dict[str, dict[int, jnp.ndarray]] = {}
  for path, value in flat_sown:
    keys = tuple(str(k) for k in path)
    if len(keys) < 3 or keys[0] != "decoder" or SOW_NAME not in keys:
      continue
    # A sow stores a tuple of calls; under scan each entry carries the scan axis first.
    array = value[-1] if isinstance(value, tuple) else value
    groups.setdefault(keys[1], {})[_sub_index(keys)] = array if array.ndim == 4 else array[None]
  if not groups:
    return None
  ordered = []
  for group in sorted(groups, key=_group_key):
    subs = [groups[group][i] for i in sorted(groups[group])]
    # Sub-layer i of cycle c is layer c * n + i: stack to [C, n, B, S, D], then merge the two axes.
    stacked = jnp.stack(subs, axis=1)
    ordered.append(stacked.reshape((-1,) + stacked.shape[2:]))
  return jnp.concatenate(ordered, axis=0) if len(ordered) > 1 else ordered[0]


def select_layers(features_LxBxSxD: jnp.ndarray, layer_indices: list[int] | None) -> jnp.ndarray:
  """The chosen layers in depth order, ``[len(indices), B, S, D]`` (all layers when None)."""
  if layer_indices is None:
    return features_LxBxSxD
  return jnp.take(features_LxBxSxD, jnp.asarray(layer_indices, jnp.int32), axis=0)
