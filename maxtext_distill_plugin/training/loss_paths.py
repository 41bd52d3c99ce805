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

"""One place picks the loss path: dense logits, the memory-lean online loss, or a cached top-k teacher.

The step hands over typed outputs of the two models and gets back ``(objective_sum, count, metrics)``:

  ==========================  ==========================  ========================================================
  student                     teacher                     loss
  ==========================  ==========================  ========================================================
  :class:`DenseStudent`       ``TeacherOutputs`` logits   ``objective.distillation_terms`` (online)
  :class:`DenseStudent`       ``TeacherOutputs`` top-k    ``objective.distillation_terms`` (offline)
  :class:`HiddenStudent`      :class:`HiddenTeacher`      ``chunked_objective.distillation_terms_from_hidden``
  :class:`HiddenStudent`      ``TeacherOutputs`` top-k    ``chunked_sparse.offline_distillation_terms_from_hidden``
  ==========================  ==========================  ========================================================

Which student output the step computes (full logits or hidden states) follows ``distill_loss_impl`` through
:func:`use_chunked_loss`, the ``auto`` policy, which lives here and nowhere else.
"""

import dataclasses

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.loss import chunked_objective
from maxtext_distill_plugin.loss import chunked_sparse
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.model import lean_forward

# "auto" picks the chunked loss from this many student logits per micro-batch on a device (256 MiB in float32).
AUTO_CHUNKED_MIN_LOGITS = 1 << 26


def use_chunked_loss(settings: DistillSettings, student_config, teacher_config) -> bool:
  """Resolves ``distill_loss_impl``: whether the step computes the loss from hidden states, tile by tile."""
  if settings.distill_loss_impl == "dense":
    return False
  configs = [student_config, teacher_config]
  reasons = [r for r in map(lean_forward.unsupported_reason, filter(None, configs)) if r]
  if settings.distill_loss_impl == "chunked":
    if reasons:
      raise ValueError(f"distill_loss_impl=chunked: {reasons[0]}. Fix: set distill_loss_impl=dense.")
    return True
  # A model with num_vocab_tiling > 1 returns no logits in training: only the chunked loss can run.
  if any(c.num_vocab_tiling > 1 for c in filter(None, configs)):
    return not reasons
  c = student_config
  if c.hardware == "cpu":
    # Measured in docs/benchmarks.md: on the CPU the tiled loss was faster and leaner at every vocabulary size.
    return not reasons
  # per_device_batch_size is already per micro-batch (MaxText loads gradient_accumulation_steps of them per step).
  logits = c.per_device_batch_size * c.max_target_length * c.vocab_size
  return not reasons and logits >= AUTO_CHUNKED_MIN_LOGITS


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DenseStudent:
  """The student's full logits ``[B, S, V]``."""

  logits_BxSxV: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class HiddenStudent:
  """The student's final hidden states ``[B, S, D]``, its unembedding ``[D, V]`` and soft cap (static)."""

  hidden_BxSxD: jnp.ndarray
  unembed_DxV: jnp.ndarray
  softcap: float | None = None


@dataclasses.dataclass(frozen=True)
class HiddenTeacher:
  """The online teacher as the memory-lean loss needs it: hidden states, unembedding, soft cap (static),
  the features of the chosen layers (or None) and its MoE load-balance loss (a metric, or None)."""

  hidden_BxSxD: jnp.ndarray
  unembed_DxV: jnp.ndarray
  features_LxBxSxD: jnp.ndarray | None = None
  moe_lb_loss: jnp.ndarray | None = None
  softcap: float | None = None


jax.tree_util.register_dataclass(HiddenStudent, data_fields=["hidden_BxSxD", "unembed_DxV"], meta_fields=["softcap"])
jax.tree_util.register_dataclass(
    HiddenTeacher,
    data_fields=["hidden_BxSxD", "unembed_DxV", "features_LxBxSxD", "moe_lb_loss"],
    meta_fields=["softcap"],
)

Student = DenseStudent | HiddenStudent
Teacher = objective.TeacherOutputs | HiddenTeacher


def loss_options(settings: DistillSettings) -> dict:
  """The static loss keywords every objective entry point takes from the settings."""
  layers = settings.distill_layer_indices
  return {
      "feature_loss_type": settings.distill_feature_loss_type,
      "divergence": settings.distill_divergence,
      "divergence_param": settings.divergence_param,
      "feature_layers": None if layers is None else tuple(layers),
  }


def distillation_terms(
    student: Student,
    teacher: Teacher,
    labels_BxS: jnp.ndarray,
    mask_BxS: jnp.ndarray,
    weights: objective.LossWeights,
    settings: DistillSettings,
    *,
    student_features_LxBxSxD: jnp.ndarray | None = None,
    z_loss_multiplier: float = 0.0,
    diagnose: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, reductions.SumCount]]:
  """``(objective_sum, count, metrics)`` of one micro-batch on the path the two outputs' types select (table above).

  ``diagnose``: online, a boolean scalar computes :data:`metric_names.ONLINE_DIAGNOSTICS` only where it is true
  (``(0, 0)`` pairs elsewhere); None computes them on every call.

  Raises:
    TypeError: for a pair of outputs no path takes (e.g. full student logits against a hidden-state teacher).
  """
  common = {"student_features_LxBxSxD": student_features_LxBxSxD, "z_loss_multiplier": z_loss_multiplier}
  common.update(loss_options(settings))
  cached = isinstance(teacher, objective.TeacherOutputs) and teacher.logits_BxSxV is None
  if isinstance(student, DenseStudent) and isinstance(teacher, objective.TeacherOutputs):
    return objective.distillation_terms(
        student.logits_BxSxV,
        teacher,
        labels_BxS,
        mask_BxS,
        weights,
        top_k=settings.distill_top_k,
        diagnose=diagnose,
        **common,
    )
  tiles = {"seq_chunk": settings.distill_seq_chunk, "vocab_chunk": settings.distill_vocab_chunk}
  if isinstance(student, HiddenStudent) and cached:
    return chunked_sparse.offline_distillation_terms_from_hidden(
        student.hidden_BxSxD,
        student.unembed_DxV,
        teacher,
        labels_BxS,
        mask_BxS,
        weights,
        student_logit_softcap=student.softcap,
        **tiles,
        **common,
    )
  if isinstance(student, HiddenStudent) and isinstance(teacher, HiddenTeacher):
    return chunked_objective.distillation_terms_from_hidden(
        student.hidden_BxSxD,
        student.unembed_DxV,
        teacher.hidden_BxSxD,
        teacher.unembed_DxV,
        labels_BxS,
        mask_BxS,
        weights,
        teacher_features_LxBxSxD=teacher.features_LxBxSxD,
        student_logit_softcap=student.softcap,
        teacher_logit_softcap=teacher.softcap,
        diagnostics=True,
        coverage_top_k=settings.distill_top_k,
        diagnose=diagnose,
        **tiles,
        **common,
    )
  raise TypeError(f"no loss path takes a {type(student).__name__} student and a {type(teacher).__name__} teacher")
