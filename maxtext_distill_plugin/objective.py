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

"""The distillation objective: combines the per-token losses into one scalar.

  L = alpha * KL(teacher_T || student_T) * T^2 + (1 - alpha) * CE(student, labels) + beta * feature

Each term is a token mean over the valid tokens. The objective returns token
*sums* plus the valid-token count so that the trainer divides once, after
summing over micro-batches; gradient accumulation then gives exactly the
full-batch loss.
"""

import dataclasses
import typing

import jax
import jax.numpy as jnp

from maxtext_distill_plugin import losses
from maxtext_distill_plugin import reductions
from maxtext_distill_plugin import sparse_losses


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LossWeights:
  """The scheduled weights of one optimizer step (float32 scalars)."""

  alpha: jnp.ndarray
  temperature: jnp.ndarray
  beta: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class TeacherOutputs:
  """What the objective needs from the teacher for one batch: dense logits (online) or a top-k cache (offline).

  Attributes:
    logits_BxSxV: teacher logits, or None for a cached teacher.
    features_LxBxSxD: teacher out_projection activations of the chosen layers, or None.
    topk_ids_BxSxK: cached teacher top-k ids (offline).
    topk_logprobs_BxSxK: their log-probabilities at T = 1 (offline).
    tail_logmass_BxS: log of the teacher mass outside the top-k (offline).
    tail_renyi_BxSxR: Renyi entropies of that tail at ``sparse_losses.TAIL_RENYI_ORDERS`` (offline, cache
      format 2), which make the tail bucket exact at T != 1; None assumes a uniform tail (exact at T = 1 only).
    tail: how the sparse KL treats that mass, ``"bucket"`` or ``"renormalize"`` (static).
    moe_lb_loss: the teacher's MoE load-balance loss (a metric only), or None.
  """

  logits_BxSxV: jnp.ndarray | None = None
  features_LxBxSxD: jnp.ndarray | None = None
  topk_ids_BxSxK: jnp.ndarray | None = None
  topk_logprobs_BxSxK: jnp.ndarray | None = None
  tail_logmass_BxS: jnp.ndarray | None = None
  tail_renyi_BxSxR: jnp.ndarray | None = None
  tail: str = "bucket"
  moe_lb_loss: jnp.ndarray | None = None


jax.tree_util.register_dataclass(
    TeacherOutputs,
    data_fields=[
        "logits_BxSxV",
        "features_LxBxSxD",
        "topk_ids_BxSxK",
        "topk_logprobs_BxSxK",
        "tail_logmass_BxS",
        "tail_renyi_BxSxR",
        "moe_lb_loss",
    ],
    meta_fields=["tail"],
)


class StudentHeadStats(typing.NamedTuple):
  """What the loss needs from the student's logits ``z`` against a cached top-k teacher (all float32).

  :func:`student_head_stats` takes them from full logits; :mod:`chunked_sparse` computes them tile by tile.

  Attributes:
    lse_BxS: ``logsumexp(z)`` over the vocabulary.
    lse_at_T_BxS: ``logsumexp(z / T)`` over the vocabulary.
    logit_at_label_BxS: ``z[label]``.
    logits_at_ids_BxSxK: ``z`` at the teacher's top-k ids.
  """

  lse_BxS: jnp.ndarray
  lse_at_T_BxS: jnp.ndarray
  logit_at_label_BxS: jnp.ndarray
  logits_at_ids_BxSxK: jnp.ndarray


def student_head_stats(student_logits_BxSxV, ids_BxSxK, labels_BxS, temperature) -> StudentHeadStats:
  """:class:`StudentHeadStats` of full ``[B, S, V]`` logits."""
  logits = student_logits_BxSxV.astype(jnp.float32)
  at_label = jnp.take_along_axis(logits, labels_BxS[..., None].astype(jnp.int32), axis=-1)[..., 0]
  at_ids, lse_at_T = sparse_losses.gather_student(logits, ids_BxSxK, temperature)
  return StudentHeadStats(jax.nn.logsumexp(logits, axis=-1), lse_at_T, at_label, at_ids)


def cached_teacher_terms(student: StudentHeadStats, teacher: TeacherOutputs, temperature, vocab_size: int):
  """Per-token ``(kl_at_T, kl_at_1, student_ce, extra)`` against a cached top-k teacher, from the student's stats.

  The one formula of the offline loss, whether the stats come from full logits or from tiles.
  """
  cached = (teacher.topk_logprobs_BxSxK, teacher.tail_logmass_BxS)
  options = {"tail": teacher.tail, "vocab_size": vocab_size, "teacher_tail_renyi_BxSxR": teacher.tail_renyi_BxSxR}
  at_ids = student.logits_at_ids_BxSxK
  kl_at_T = sparse_losses.sparse_kl_from_gathered(
      at_ids, student.lse_at_T_BxS, *cached, temperature=temperature, **options
  )
  kl_at_1 = sparse_losses.sparse_kl_from_gathered(at_ids, student.lse_BxS, *cached, temperature=1.0, **options)
  student_ce = student.lse_BxS - student.logit_at_label_BxS
  # Offline there is no teacher CE to report honestly (labels outside the top-k have no stored probability).
  return kl_at_T, kl_at_1, student_ce, {"distill/topk_coverage": sparse_losses.topk_coverage(teacher.tail_logmass_BxS)}


def _logit_terms(student_logits_BxSxV, teacher: TeacherOutputs, labels_BxS, temperature):
  """Per-token ``(kl_at_T, kl_at_1, student_ce, extra)``; ``extra`` holds the teacher's CE or top-k coverage."""
  if teacher.logits_BxSxV is None:
    *batch_shape, vocab_size = student_logits_BxSxV.shape
    sparse_losses.check_teacher(
        tuple(batch_shape),
        teacher.topk_ids_BxSxK,
        teacher.topk_logprobs_BxSxK,
        teacher.tail_logmass_BxS,
        teacher.tail,
        vocab_size,
        teacher.tail_renyi_BxSxR,
    )
    stats = student_head_stats(student_logits_BxSxV, teacher.topk_ids_BxSxK, labels_BxS, temperature)
    return cached_teacher_terms(stats, teacher, temperature, vocab_size)
  student_logp = losses.log_softmax_at(student_logits_BxSxV, 1.0)
  student_ce = losses.cross_entropy_from_log_probs(student_logp, labels_BxS)
  student_logp_T = losses.log_softmax_at(student_logits_BxSxV, temperature)
  teacher_logp_T = losses.log_softmax_at(teacher.logits_BxSxV, temperature)
  kl_at_T = losses.kl_from_log_probs(teacher_logp_T, student_logp_T)
  teacher_logp = jax.lax.stop_gradient(losses.log_softmax_at(teacher.logits_BxSxV, 1.0))
  kl_at_1 = losses.kl_from_log_probs(teacher_logp, student_logp)
  return (
      kl_at_T,
      kl_at_1,
      student_ce,
      {"distill/teacher_loss": losses.cross_entropy_from_log_probs(teacher_logp, labels_BxS)},
  )


def distillation_terms(
    student_logits_BxSxV: jnp.ndarray,
    teacher: TeacherOutputs,
    labels_BxS: jnp.ndarray,
    mask_BxS: jnp.ndarray,
    weights: LossWeights,
    *,
    student_features_LxBxSxD: jnp.ndarray | None = None,
    feature_loss_type: str = "cosine",
    z_loss_multiplier: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, reductions.SumCount]]:
  """Token-summed objective, valid-token count and metrics of one batch.

  Args:
    student_logits_BxSxV: ``[B, S, V]`` student logits.
    teacher: teacher logits ``[B, S, V]`` (online) or its cached top-k (offline), and optional features.
    labels_BxS: ``[B, S]`` integer targets.
    mask_BxS: ``[B, S]`` validity (padding is false).
    weights: scheduled alpha, temperature and beta.
    student_features_LxBxSxD: student features of the same layers as the
      teacher's, or None.
    feature_loss_type: ``"cosine"`` or ``"l2"``.
    z_loss_multiplier: MaxText's ``z_loss_multiplier`` of the student (see :func:`combine_terms`).

  Returns:
    ``(objective_sum, count, metrics)``: the objective summed over valid
    tokens, the number of valid tokens, and a dict of (sum, count) metrics
    named as in the spec's Monitoring table.
  """
  kl_at_T, kl_at_1, student_ce, extra = _logit_terms(student_logits_BxSxV, teacher, labels_BxS, weights.temperature)
  student_lse = None
  if z_loss_multiplier:
    student_lse = jax.nn.logsumexp(student_logits_BxSxV.astype(jnp.float32), axis=-1)
  return combine_terms(
      kl_at_T,
      kl_at_T,
      kl_at_1,
      student_ce,
      mask_BxS,
      weights,
      extra=extra,
      student_features_LxBxSxD=student_features_LxBxSxD,
      teacher_features_LxBxSxD=teacher.features_LxBxSxD,
      feature_loss_type=feature_loss_type,
      student_lse_BxS=student_lse,
      z_loss_multiplier=z_loss_multiplier,
  )


def combine_terms(
    divergence_at_T_BxS: jnp.ndarray,
    kl_at_T_BxS: jnp.ndarray,
    kl_at_1_BxS: jnp.ndarray,
    student_ce_BxS: jnp.ndarray,
    mask_BxS: jnp.ndarray,
    weights: LossWeights,
    *,
    extra: dict[str, jnp.ndarray] | None = None,
    student_features_LxBxSxD: jnp.ndarray | None = None,
    teacher_features_LxBxSxD: jnp.ndarray | None = None,
    feature_loss_type: str = "cosine",
    student_lse_BxS: jnp.ndarray | None = None,
    z_loss_multiplier: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, reductions.SumCount]]:
  """The objective and metrics from per-token terms, however they were computed (dense, sparse or chunked).

  Args:
    divergence_at_T_BxS: the optimised divergence ``D(teacher_T, student_T)`` per token (``distill_divergence``),
      without T^2.
    kl_at_T_BxS: forward ``KL(teacher_T || student_T)`` per token (a metric; no gradient flows through it); the
      same array as ``divergence_at_T_BxS`` for forward KL.
    kl_at_1_BxS: forward KL at T = 1 (a metric; no gradient flows through it).
    student_ce_BxS: student cross-entropy on the labels.
    mask_BxS: token validity.
    weights: scheduled alpha, temperature and beta.
    extra: further per-token metrics, e.g. the teacher's CE, reduced like the rest.
    student_features_LxBxSxD: student features, or None (no feature loss).
    teacher_features_LxBxSxD: teacher features of the same layers, or None.
    feature_loss_type: ``"cosine"`` or ``"l2"``.
    student_lse_BxS: ``logsumexp`` of the student's logits per token; needed when ``z_loss_multiplier`` is set.
    z_loss_multiplier: ``z`` of MaxText's z-loss: ``z * lse^2`` is added per valid token, as MaxText's
      pre-training adds it to its CE, and not scaled by ``1 - alpha`` (it regularises the student's logits,
      whatever the labels' weight); metric ``distill/z_loss``.

  Returns:
    ``(objective_sum, count, metrics)`` as :func:`distillation_terms`.
  """
  kl_at_T_BxS, kl_at_1_BxS = jax.lax.stop_gradient((kl_at_T_BxS, kl_at_1_BxS))
  soft = divergence_at_T_BxS * jnp.square(weights.temperature)
  per_token = weights.alpha * soft + (1.0 - weights.alpha) * student_ce_BxS
  if student_features_LxBxSxD is not None and teacher_features_LxBxSxD is not None:
    feature = weights.beta * losses.feature_distance(
        student_features_LxBxSxD, jax.lax.stop_gradient(teacher_features_LxBxSxD), loss_type=feature_loss_type
    )
    per_token = per_token + feature
  else:
    feature = jnp.zeros_like(student_ce_BxS)
  z_loss = None
  if z_loss_multiplier:
    if student_lse_BxS is None:
      raise ValueError("z_loss_multiplier needs the student's per-token logsumexp (student_lse_BxS)")
    z_loss = z_loss_multiplier * jnp.square(student_lse_BxS.astype(jnp.float32))
    per_token = per_token + z_loss

  objective_sum, count = reductions.masked_sum_count(per_token, mask_BxS)
  metrics = {
      "distill/soft_loss": reductions.masked_sum_count(soft, mask_BxS),
      "distill/hard_loss": reductions.masked_sum_count(student_ce_BxS, mask_BxS),
      "distill/divergence_at_T": reductions.masked_sum_count(divergence_at_T_BxS, mask_BxS),
      "distill/kl_div_at_T": reductions.masked_sum_count(kl_at_T_BxS, mask_BxS),
      "distill/kl_div_T1": reductions.masked_sum_count(kl_at_1_BxS, mask_BxS),
      "distill/out_proj_feature_loss": reductions.masked_sum_count(feature, mask_BxS),
      "distill/total_loss": (objective_sum, count),
  }
  if z_loss is not None:
    metrics["distill/z_loss"] = reductions.masked_sum_count(z_loss, mask_BxS)
  metrics.update({name: reductions.masked_sum_count(values, mask_BxS) for name, values in (extra or {}).items()})
  return objective_sum, count, jax.tree.map(jax.lax.stop_gradient, metrics)


def schedule_metrics(weights: LossWeights) -> dict[str, reductions.SumCount]:
  """The scheduled values as (value, 1) pairs, averaged like any metric."""
  return {
      "distill/alpha": reductions.scalar_pair(weights.alpha),
      "distill/temperature": reductions.scalar_pair(weights.temperature),
      "distill/beta_feature": reductions.scalar_pair(weights.beta),
  }


def derived_metrics(means: dict[str, float]) -> dict[str, float]:
  """Metrics computed from aggregated means: perplexity = exp(mean CE)."""
  import math  # pylint: disable=import-outside-toplevel

  derived = {}
  if "distill/hard_loss" in means:
    derived["distill/student_perplexity"] = math.exp(min(means["distill/hard_loss"], 80.0))
  return derived
