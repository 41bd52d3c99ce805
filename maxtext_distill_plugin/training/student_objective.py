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

"""The student's objective in one step: the scheduled weights, and its loss against a teacher's head.

:func:`student_terms` runs the student's forward (full logits, or hidden states for the memory-lean path), applies
the objective's own parameters where it has any (the learned feature projection), lets :mod:`loss.paths` pick the
loss from the two heads, and adds MaxText's own training terms. :mod:`step` differentiates it and updates.
"""

from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.loss import aux_terms
from maxtext_distill_plugin.loss import chunked_sparse
from maxtext_distill_plugin.loss import feature_projection
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import losses
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import paths
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.loss.schedules import schedule_value
from maxtext_distill_plugin.model import forward as model_forward


def scheduled_weights(settings: DistillSettings, step, total_steps: int) -> objective.LossWeights:
  """alpha, T and beta at optimizer ``step``."""
  s = settings
  return objective.LossWeights(
      alpha=schedule_value(s.distill_alpha_schedule, s.distill_alpha, s.distill_alpha_end, step, total_steps),
      temperature=schedule_value(
          s.distill_temperature_schedule, s.distill_temperature, s.distill_temperature_end, step, total_steps
      ),
      beta=schedule_value(s.distill_beta_schedule, s.distill_beta, s.distill_beta_end, step, total_steps),
  )


def loss_options(settings: DistillSettings) -> heads.LossOptions:
  """The static numbers the loss takes from the settings."""
  layers = settings.distill_layer_indices
  return heads.LossOptions(
      divergence=settings.distill_divergence,
      divergence_param=settings.divergence_param,
      feature_loss_type=settings.distill_feature_loss_type,
      feature_layers=None if layers is None else tuple(layers),
      top_k=settings.distill_top_k,
      seq_chunk=settings.distill_seq_chunk,
      vocab_chunk=settings.distill_vocab_chunk,
  )


def student_terms(
    model,
    teacher,
    batch,
    weights,
    settings: DistillSettings,
    *,
    chunked: bool,
    enable_dropout: bool,
    diagnose=None,
    objective_params=None,
):
  """``(objective_sum, count, metrics)`` of the student ``model`` against a teacher's head (:mod:`loss.heads`).

  The student's forward gives full logits or (``chunked``) hidden states; :func:`paths.distillation_terms`
  picks the loss from the two heads. Besides the distillation terms, the student keeps MaxText's own training
  terms where its config sets them: the z-loss (``z_loss_multiplier``), the MoE load balance
  (``load_balance_loss_weight``) and the multi-token prediction (``mtp_num_layers``); see :mod:`aux_terms` for how
  the per-batch ones are weighted. ``diagnose``: see :func:`paths.distillation_terms`. ``objective_params``: the
  objective's own parameters (:mod:`objective_params`), or None; with a learned feature projection the student's
  features are mapped to the teacher's width before the feature loss.
  """
  z_loss = float(getattr(model.config, "z_loss_multiplier", 0.0) or 0.0)
  if chunked:
    (hidden, unembed, softcap), values = model_forward.forward_hidden(
        model, batch, settings=settings, enable_dropout=enable_dropout
    )
    student = heads.StudentHidden(hidden, unembed, softcap=softcap)
  else:
    logits, values = model_forward.forward_sown(model, batch, settings=settings, enable_dropout=enable_dropout)
    student = heads.StudentLogits(logits)
  student_features = values.features_LxBxSxD
  if objective_params is not None and student_features is not None:
    kernel = objective_params[feature_projection.PARAMS_KEY]["kernel"]
    student_features = feature_projection.project(kernel, student_features)
  terms = paths.distillation_terms(
      student,
      teacher,
      batch["targets"],
      model_forward.token_mask(batch),
      weights,
      loss_options(settings),
      student_features_LxBxSxD=student_features,
      z_loss_multiplier=z_loss,
      diagnose=diagnose,
  )
  return aux_terms.add_aux_terms(
      *terms, moe_lb_loss=values.moe_lb_loss, mtp_loss=values.mtp_loss, teacher_moe_lb_loss=teacher.moe_lb_loss
  )


def student_cross_entropy(model, batch, settings: DistillSettings, *, chunked: bool) -> reductions.SumCount:
  """(sum, count) of the student's CE on the labels of ``batch``; tiled from hidden states when ``chunked``."""
  labels = batch["targets"]
  if chunked:
    (hidden, unembed, softcap), _ = model_forward.forward_hidden(model, batch, settings=settings, enable_dropout=False)
    stats = chunked_sparse.student_head_stats_from_hidden(
        hidden,
        unembed,
        labels[..., None],  # one id to gather, which the CE does not use
        labels,
        1.0,
        seq_chunk=settings.distill_seq_chunk,
        vocab_chunk=settings.distill_vocab_chunk,
        logit_softcap=softcap,
    )
    per_token = stats.lse_BxS - stats.logit_at_label_BxS
  else:
    logits, _ = model_forward.forward(model, batch, settings=settings, enable_dropout=False)
    per_token = losses.cross_entropy_from_log_probs(losses.log_softmax_at(logits, 1.0), labels)
  return reductions.masked_sum_count(per_token, model_forward.token_mask(batch))
