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

  L = alpha * D(teacher_T, student_T) * T^2 + (1 - alpha) * CE(student, labels) + beta * feature

``D`` is ``distill_divergence`` (:mod:`divergences`; forward KL by default, the KL of Hinton et al.).

Each term is a token mean over the valid tokens. The objective returns token
*sums* plus the valid-token count so that the trainer divides once, after
summing over micro-batches; gradient accumulation then gives exactly the
full-batch loss.
"""

import dataclasses
import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import cached_objective
from maxtext_distill_plugin.loss import divergences
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import losses
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.loss import sparse_losses
from maxtext_distill_plugin.loss import teacher_mixture


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LossWeights:
  """The scheduled weights of one optimizer step (float32 scalars)."""

  alpha: jnp.ndarray
  temperature: jnp.ndarray
  beta: jnp.ndarray


def _divergence_terms(divergence: str, divergence_param, teacher_logp, student_logp, kl: jnp.ndarray) -> jnp.ndarray:
  """The optimised divergence per token: ``kl`` itself for forward KL (today's numbers bit for bit), else the
  registry's divergence of the same log-probabilities."""
  if divergence == "forward_kl":
    return kl
  return divergences.lookup(divergence)(teacher_logp, student_logp, param=divergence_param)


def _cached_logit_terms(student_logits_BxSxV, teacher: heads.CachedTopK, labels_BxS, temperature, **options):
  """Per-token terms against a cached top-k: :func:`cached_objective.cached_teacher_terms` of full logits."""
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
  stats = cached_objective.student_head_stats(student_logits_BxSxV, teacher.topk_ids_BxSxK, labels_BxS, temperature)
  return cached_objective.cached_teacher_terms(
      stats,
      teacher,
      temperature,
      vocab_size,
      divergence=options["divergence"],
      divergence_param=options["divergence_param"],
  )


def _teacher_log_probs(teacher: heads.TeacherLogits | heads.TeacherMixture, temperature):
  """The online teacher's log-probabilities at T and (gradient-stopped) at 1, ``[B, S, V]`` each."""
  if isinstance(teacher, heads.TeacherMixture):
    return teacher_mixture.dense_log_probs(teacher, temperature)
  teacher_logp_T = losses.log_softmax_at(teacher.logits_BxSxV, temperature)
  return teacher_logp_T, jax.lax.stop_gradient(losses.log_softmax_at(teacher.logits_BxSxV, 1.0))


def _online_logit_terms(
    student_logits_BxSxV,
    teacher: heads.TeacherLogits | heads.TeacherMixture,
    labels_BxS,
    temperature,
    *,
    divergence: str,
    divergence_param,
    top_k: int | None,
    diagnose=None,
):
  """Per-token ``(divergence_at_T, kl_at_T, kl_at_1, student_ce, extra)`` against full teacher log-probabilities;
  ``extra`` holds the teacher's CE and the diagnostics (zeros where ``diagnose`` is given and false)."""
  student_logp = losses.log_softmax_at(student_logits_BxSxV, 1.0)
  student_ce = losses.cross_entropy_from_log_probs(student_logp, labels_BxS)
  student_logp_T = losses.log_softmax_at(student_logits_BxSxV, temperature)
  teacher_logp_T, teacher_logp = _teacher_log_probs(teacher, temperature)
  kl_at_T = losses.kl_from_log_probs(teacher_logp_T, student_logp_T)
  divergence_at_T = _divergence_terms(divergence, divergence_param, teacher_logp_T, student_logp_T, kl_at_T)
  kl_at_1 = losses.kl_from_log_probs(teacher_logp, student_logp)
  # Diagnostics from the log-probabilities at T = 1 already computed: no further softmax over [B, S, V].
  frozen_student_logp = jax.lax.stop_gradient(student_logp)

  def diagnostics():
    found = {
        metric_names.TOP1_AGREEMENT: (
            (jnp.argmax(teacher_logp, axis=-1) == jnp.argmax(frozen_student_logp, axis=-1)).astype(jnp.float32)
        ),
        metric_names.TEACHER_ENTROPY: losses.entropy_from_log_probs(teacher_logp),
        metric_names.STUDENT_ENTROPY: losses.entropy_from_log_probs(frozen_student_logp),
    }
    if top_k is not None:
      found[metric_names.TOPK_COVERAGE] = topk_mass(teacher_logp, top_k)
    return found

  extra = {metric_names.TEACHER_LOSS: losses.cross_entropy_from_log_probs(teacher_logp, labels_BxS)}
  if diagnose is None:
    extra.update(diagnostics())
  else:  # full-vocabulary passes (a top-k among them) only on the steps that ask for them

    def skipped():
      return {name: jnp.zeros(labels_BxS.shape, jnp.float32) for name in jax.eval_shape(diagnostics)}

    extra.update(jax.lax.cond(diagnose, diagnostics, skipped))
  return divergence_at_T, kl_at_T, kl_at_1, student_ce, jax.lax.stop_gradient(extra)


# The per-token terms of each teacher head on the dense path, and whether its diagnostics can be gated (online: they
# cost full-vocabulary passes; offline they come from the cache and the student's statistics, always computed).
_PER_TOKEN = {
    heads.TeacherLogits: (_online_logit_terms, True),
    heads.TeacherMixture: (_online_logit_terms, True),
    heads.CachedTopK: (_cached_logit_terms, False),
}


def topk_mass(logp_BxSxV: jnp.ndarray, top_k: int) -> jnp.ndarray:
  """The mass of the ``min(top_k, V)`` most probable entries per token, ``[B, S]``: what a k-cache keeps."""
  values = losses.top_k_values(logp_BxSxV, min(int(top_k), logp_BxSxV.shape[-1]))
  return jnp.sum(jnp.exp(values), axis=-1)


def distillation_terms(
    student_logits_BxSxV: jnp.ndarray,
    teacher: heads.TeacherLogits | heads.TeacherMixture | heads.CachedTopK,
    labels_BxS: jnp.ndarray,
    mask_BxS: jnp.ndarray,
    weights: LossWeights,
    *,
    student_features_LxBxSxD: jnp.ndarray | None = None,
    feature_loss_type: str = "cosine",
    z_loss_multiplier: float = 0.0,
    divergence: str = "forward_kl",
    divergence_param: float | None = None,
    top_k: int | None = None,
    feature_layers: tuple[int, ...] | None = None,
    diagnose: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, reductions.SumCount]]:
  """Token-summed objective, valid-token count and metrics of one batch.

  Args:
    student_logits_BxSxV: ``[B, S, V]`` student logits.
    teacher: the teacher's logits ``[B, S, V]`` or a mixture of several (online), or its cached top-k (offline).
    labels_BxS: ``[B, S]`` integer targets.
    mask_BxS: ``[B, S]`` validity (padding is false).
    weights: scheduled alpha, temperature and beta.
    student_features_LxBxSxD: student features of the same layers as the
      teacher's, or None.
    feature_loss_type: ``"cosine"`` or ``"l2"``.
    z_loss_multiplier: MaxText's ``z_loss_multiplier`` of the student (see :func:`combine_terms`).
    divergence: the optimised divergence, a :data:`divergences.DIVERGENCES` name (static).
    divergence_param: its parameter (JSD's beta, the skew KLs' lambda), or None for its default (static).
    top_k: online: k of the ``distill/topk_coverage`` diagnostic (clipped to V; static), or None for no such
      metric; offline the coverage comes from the cache.
    feature_layers: the student's layer index of each feature row, for the per-layer metrics (static).
    diagnose: online: None computes :data:`metric_names.ONLINE_DIAGNOSTICS` on every call; a boolean scalar
      (traced) computes them only where it is true and reports them as ``(0, 0)`` pairs elsewhere. Offline the
      diagnostics come from the cached top-k and the student's statistics, and are always computed.

  Returns:
    ``(objective_sum, count, metrics)``: the objective summed over valid
    tokens, the number of valid tokens, and a dict of (sum, count) metrics
    named as in the spec's Monitoring table (:mod:`metric_names`).
  """
  per_token, gated = _PER_TOKEN[type(teacher)]
  diagnose = diagnose if gated else None
  divergence_at_T, kl_at_T, kl_at_1, student_ce, extra = per_token(
      student_logits_BxSxV,
      teacher,
      labels_BxS,
      weights.temperature,
      divergence=divergence,
      divergence_param=divergence_param,
      top_k=top_k,
      diagnose=diagnose,
  )
  student_lse = None
  if z_loss_multiplier:
    student_lse = jax.nn.logsumexp(student_logits_BxSxV.astype(jnp.float32), axis=-1)
  objective_sum, count, metrics = combine_terms(
      divergence_at_T,
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
      feature_layers=feature_layers,
  )
  if diagnose is not None:
    metrics = reductions.gate_pairs(metrics, metric_names.ONLINE_DIAGNOSTICS, diagnose)
  return objective_sum, count, metrics


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
    feature_layers: tuple[int, ...] | None = None,
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
    feature_layers: the student's layer index of each of the ``L`` feature rows (static), which name the
      per-layer metrics ``distill/out_proj_feature_loss/layer_<i>`` (each layer's distance before beta; their
      mean times beta is ``distill/out_proj_feature_loss``); None numbers the rows 0 .. L-1 (all layers).

  Returns:
    ``(objective_sum, count, metrics)`` as :func:`distillation_terms`.
  """
  kl_at_T_BxS, kl_at_1_BxS = jax.lax.stop_gradient((kl_at_T_BxS, kl_at_1_BxS))
  soft = divergence_at_T_BxS * jnp.square(weights.temperature)
  per_token = weights.alpha * soft + (1.0 - weights.alpha) * student_ce_BxS
  per_layer = {}
  if student_features_LxBxSxD is not None and teacher_features_LxBxSxD is not None:
    distances = losses.feature_distance_per_layer(
        student_features_LxBxSxD, jax.lax.stop_gradient(teacher_features_LxBxSxD), loss_type=feature_loss_type
    )
    feature = weights.beta * jnp.mean(distances, axis=0)
    per_token = per_token + feature
    layers = tuple(range(distances.shape[0])) if feature_layers is None else tuple(feature_layers)
    if len(layers) != distances.shape[0]:
      raise ValueError(f"feature_layers={layers} names {len(layers)} layers, the features hold {distances.shape[0]}")
    per_layer = {metric_names.feature_layer(i): distances[row] for row, i in enumerate(layers)}
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
      metric_names.SOFT_LOSS: reductions.masked_sum_count(soft, mask_BxS),
      metric_names.HARD_LOSS: reductions.masked_sum_count(student_ce_BxS, mask_BxS),
      metric_names.DIVERGENCE_AT_T: reductions.masked_sum_count(divergence_at_T_BxS, mask_BxS),
      metric_names.KL_DIV_AT_T: reductions.masked_sum_count(kl_at_T_BxS, mask_BxS),
      metric_names.KL_DIV_T1: reductions.masked_sum_count(kl_at_1_BxS, mask_BxS),
      metric_names.FEATURE_LOSS: reductions.masked_sum_count(feature, mask_BxS),
      metric_names.TOTAL_LOSS: (objective_sum, count),
  }
  if z_loss is not None:
    metrics[metric_names.Z_LOSS] = reductions.masked_sum_count(z_loss, mask_BxS)
  metrics.update({name: reductions.masked_sum_count(values, mask_BxS) for name, values in per_layer.items()})
  metrics.update({name: reductions.masked_sum_count(values, mask_BxS) for name, values in (extra or {}).items()})
  return objective_sum, count, jax.tree.map(jax.lax.stop_gradient, metrics)


def schedule_metrics(weights: LossWeights) -> dict[str, reductions.SumCount]:
  """The scheduled values as (value, 1) pairs, averaged like any metric."""
  return {
      metric_names.ALPHA: reductions.scalar_pair(weights.alpha),
      metric_names.TEMPERATURE: reductions.scalar_pair(weights.temperature),
      metric_names.BETA_FEATURE: reductions.scalar_pair(weights.beta),
  }


def derived_metrics(means: dict[str, float]) -> dict[str, float]:
  """Metrics computed from aggregated means: perplexity = exp(mean CE)."""
  import math  # pylint: disable=import-outside-toplevel

  derived = {}
  if metric_names.HARD_LOSS in means:
    derived[metric_names.STUDENT_PERPLEXITY] = math.exp(min(means[metric_names.HARD_LOSS], 80.0))
  return derived
