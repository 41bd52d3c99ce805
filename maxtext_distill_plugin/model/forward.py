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


"""The forwards the distillation step runs over a MaxText model: full logits or final hidden states, and what the
model sowed on the way (features of the chosen layers, MoE load balance, MTP)."""

from flax import nnx
import jax.numpy as jnp

from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.model import features
from maxtext_distill_plugin.model import lean_forward
from maxtext_distill_plugin.model import sown


def forward_sown(
    model: nnx.Module, batch: dict, *, settings: DistillSettings, enable_dropout: bool, teacher: bool = False
):
  """Logits ``[B, S, V]`` and what the forward sowed (:class:`sown.Sown`, features narrowed to the chosen layers).

  ``teacher`` selects the teacher's layer indices (``distill_teacher_layer_indices``) for the features.
  """
  logits = model(
      decoder_input_tokens=batch["inputs"],
      decoder_positions=batch["inputs_position"],
      decoder_segment_ids=batch["inputs_segmentation"],
      enable_dropout=enable_dropout,
      decoder_target_tokens=batch["targets"],
      decoder_target_mask=batch["targets_segmentation"],
  )
  return logits, _pop_features(model, settings, teacher)


def forward(model: nnx.Module, batch: dict, *, settings: DistillSettings, enable_dropout: bool, teacher: bool = False):
  """Logits ``[B, S, V]`` and the chosen layers' features ``[L, B, S, D]`` (or None); see :func:`forward_sown`."""
  logits, sown_values = forward_sown(model, batch, settings=settings, enable_dropout=enable_dropout, teacher=teacher)
  return logits, sown_values.features_LxBxSxD


def forward_hidden(
    model: nnx.Module, batch: dict, *, settings: DistillSettings, enable_dropout: bool, teacher: bool = False
):
  """Like :func:`forward_sown` without logits: ``((hidden [B, S, D], unembed [D, V], softcap), sown.Sown)``."""
  head = lean_forward.forward_hidden(model, batch, enable_dropout=enable_dropout)
  return head, _pop_features(model, settings, teacher)


def _pop_features(model: nnx.Module, settings: DistillSettings, teacher: bool) -> sown.Sown:
  """Everything ``model`` sowed (:func:`sown.pop_sown`), its features narrowed to the chosen layers (or None when
  the feature loss is off)."""
  values = sown.pop_sown(model, role="teacher" if teacher else "student", want_features=settings.extract_features)
  if not settings.extract_features:
    return values
  found, layers = values.features_LxBxSxD, int(model.config.num_decoder_layers)
  if found is None or found.shape[0] != layers:
    block = getattr(model.config.decoder_block, "value", model.config.decoder_block)
    raise ValueError(
        f"distill_beta={settings.distill_beta} (end {settings.distill_beta_end}) needs the attention"
        f" {features.SOW_NAME} of all {layers} layers, but the {type(model).__name__} (decoder_block={block}) sowed"
        f" {0 if found is None else found.shape[0]}. Fix: use a decoder_block of {sorted(features.SOWING_DECODERS)}"
        " with scan_layers=True, or set distill_beta=0.0."
    )
  indices = settings.teacher_layer_indices if teacher else settings.distill_layer_indices
  return values._replace(features_LxBxSxD=features.select_layers(found, indices))


def token_mask(batch: dict) -> jnp.ndarray:
  """Valid target tokens ``[B, S]``: padding has segment id 0."""
  return batch["targets_segmentation"] != 0
