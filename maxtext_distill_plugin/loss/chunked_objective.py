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

"""The online distillation objective from final hidden states, without ``[B, S, V]`` logits.

Online, both models' hidden states are at hand; offline batches (a cached top-k teacher) take the same skeleton
(:mod:`tile_vjp`) through :mod:`chunked_sparse`, on the same tiles (:mod:`tiles`).

:func:`distillation_terms_from_hidden` returns exactly what the dense objective returns for
``logits = cap(hidden @ W)`` (``cap(u) = c * tanh(u / c)``, MaxText's ``final_logits_soft_cap``, one c per model, or
identity), but works on tiles of ``[B, seq_chunk]`` tokens by ``vocab_chunk`` columns: :mod:`online_tiles` holds the
per-tile math (one or two sweeps over the vocabulary per token tile, the analytic gradient of each tile's logits) and
:mod:`tile_vjp` the custom VJP around it, which keeps only the inputs and a few ``[B, S]`` log-sum-exps and recomputes
each tile's logits in the backward. Every divergence shares this one kernel; only its elementwise form and partial
come from the registry (:mod:`divergences`). No ``[B, S, V]`` array (logits, softmax or one-hot) exists in the forward
or the backward; the largest temporaries are ``[B, seq_chunk, vocab_chunk]`` tiles.

The teacher is a constant: its hidden states and unembedding are ``stop_gradient``. The temperature is a schedule
value and gets no gradient. Tiles run along the sequence axis, so a sharded batch axis stays sharded; a sharded
sequence axis (context parallelism) would be gathered per tile.
"""

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import divergences
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import online_tiles
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.loss import teacher_mixture
from maxtext_distill_plugin.loss import tile_vjp
from maxtext_distill_plugin.loss import tiles

DEFAULT_SEQ_CHUNK = tiles.DEFAULT_SEQ_CHUNK
_DIAGNOSTIC_METRICS = {
    "top1": metric_names.TOP1_AGREEMENT,
    "entropy_t": metric_names.TEACHER_ENTROPY,
    "entropy_s": metric_names.STUDENT_ENTROPY,
    "coverage": metric_names.TOPK_COVERAGE,
}


def distillation_terms_from_hidden(
    student_hidden_BxSxD: jnp.ndarray,
    student_unembed_DxV: jnp.ndarray,
    teacher_hidden_BxSxD: jnp.ndarray | tuple[jnp.ndarray, ...],
    teacher_unembed_DxV: jnp.ndarray | tuple[jnp.ndarray, ...],
    labels_BxS: jnp.ndarray,
    mask_BxS: jnp.ndarray,
    weights: objective.LossWeights,
    *,
    student_features_LxBxSxD: jnp.ndarray | None = None,
    teacher_features_LxBxSxD: jnp.ndarray | None = None,
    feature_loss_type: str = "cosine",
    seq_chunk: int = DEFAULT_SEQ_CHUNK,
    vocab_chunk: int | None = None,
    student_logit_softcap: float | None = None,
    teacher_logit_softcap: float | None | tuple[float | None, ...] = None,
    teacher_weights: tuple[float, ...] | None = None,
    z_loss_multiplier: float = 0.0,
    divergence: str = "forward_kl",
    divergence_param: float | None = None,
    diagnostics: bool = False,
    coverage_top_k: int | None = None,
    feature_layers: tuple[int, ...] | None = None,
    diagnose: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, reductions.SumCount]]:
  """:func:`objective.distillation_terms` of ``cap(hidden @ unembed)``, tile by tile.

  Args:
    student_hidden_BxSxD: ``[B, S, Ds]`` student final hidden states (after the
      final norm), any float dtype; gradients flow here.
    student_unembed_DxV: ``[Ds, V]`` student output projection; gradients flow here.
    teacher_hidden_BxSxD: ``[B, S, Dt]`` teacher final hidden states (Dt may differ from Ds).
    teacher_unembed_DxV: ``[Dt, V]`` teacher output projection.
    labels_BxS: ``[B, S]`` integer targets in ``[0, V)``.
    mask_BxS: ``[B, S]`` validity (padding is false).
    weights: scheduled alpha, temperature and beta.
    student_features_LxBxSxD: student features ``[L, B, S, D]`` or None.
    teacher_features_LxBxSxD: teacher features of the same layers, or None.
    feature_loss_type: ``"cosine"`` or ``"l2"``.
    seq_chunk: sequence positions per tile (all B rows at once); S need not divide by it.
    vocab_chunk: vocabulary columns per tile, or None for the whole vocabulary
      (V need not divide by it). Smaller tiles save memory at the cost of more,
      smaller matmuls.
    student_logit_softcap: ``c`` of ``c * tanh(z / c)`` on the student's logits
      (MaxText's ``final_logits_soft_cap``), or None.
    teacher_logit_softcap: the same for the teacher.
    teacher_weights: several teachers mixed per token (:mod:`teacher_mixture`): their static weights (positive,
      summing to 1), with ``teacher_hidden_BxSxD``, ``teacher_unembed_DxV`` and ``teacher_logit_softcap`` tuples of
      as many entries (widths may differ); the teacher is then ``p_T = sum_i w_i softmax(z_i / T)`` at T and likewise
      at 1, at the cost of one more sweep over each teacher's vocabulary tiles (its log-sum-exps). None: one teacher.
    z_loss_multiplier: MaxText's z-loss on the student (:func:`objective.combine_terms`).
    divergence: the optimised divergence at T, a name in :data:`divergences.DIVERGENCES` (static). Forward KL
      takes one sweep over the vocabulary per token tile; any other takes a second one.
    divergence_param: its parameter (JSD's beta, the skew KLs' lambda), None for the registry's default.
    diagnostics: also report ``distill/top1_agreement``, ``distill/teacher_entropy`` and
      ``distill/student_entropy`` (T = 1, gradient stopped), computed in sweep 1.
    coverage_top_k: also report ``distill/topk_coverage``, the teacher's mass at T = 1 in its top-k
      (what a k-cache would keep), for this static k >= 1 (k >= V: all of the mass, 1); None: off.
    diagnose: None computes the diagnostics asked for on every call; a boolean scalar (traced) computes them only
      where it is true (a ``lax.cond`` around sweep 1) and otherwise reports them as ``(0, 0)`` pairs, so that
      pairs summed over steps average over the steps that computed them.

  Returns:
    ``(objective_sum, count, metrics)`` with the same meaning, names and
    gradients (w.r.t. the student) as :func:`objective.distillation_terms`.
  """
  batch, seq, _ = student_hidden_BxSxD.shape
  vocab = student_unembed_DxV.shape[1]
  mixed = teacher_weights is not None
  members = (
      tuple(zip(teacher_hidden_BxSxD, teacher_unembed_DxV)) if mixed else ((teacher_hidden_BxSxD, teacher_unembed_DxV),)
  )
  if any(unembed.shape[1] != vocab for _, unembed in members):
    raise ValueError(f"student vocabulary {vocab} != teacher vocabulary {[u.shape[1] for _, u in members]}")
  if mixed and not len(members) == len(teacher_weights) == len(teacher_logit_softcap):
    raise ValueError(f"teacher_weights={teacher_weights}: one weight and soft cap per teacher ({len(members)})")
  for name, hidden, unembed in (("student", student_hidden_BxSxD, student_unembed_DxV),) + tuple(
      ("teacher", hidden, unembed) for hidden, unembed in members
  ):
    if hidden.shape[:2] != (batch, seq) or hidden.shape[2] != unembed.shape[0]:
      raise ValueError(f"{name} hidden {hidden.shape} does not match [B={batch}, S={seq}, D] @ {unembed.shape}")
  if labels_BxS.shape != (batch, seq) or mask_BxS.shape != (batch, seq):
    raise ValueError(f"labels {labels_BxS.shape} and mask {mask_BxS.shape} must be [B={batch}, S={seq}]")
  tiling = tiles.make_tiling(seq, vocab, seq_chunk, vocab_chunk, student_logit_softcap)
  param = divergences.lookup(divergence).check_param(divergence_param)
  if coverage_top_k is not None and coverage_top_k < 1:
    raise ValueError(f"coverage_top_k={coverage_top_k} must be positive or None")
  top_k = None if coverage_top_k is None else min(coverage_top_k, vocab)  # a k-cache with k >= V keeps all of it
  gated = diagnose is not None
  if mixed:
    teacher = teacher_mixture.MixedTeachers(
        tuple(float(w) for w in teacher_weights), tuple(float(c) if c else None for c in teacher_logit_softcap)
    )
  else:
    teacher = online_tiles.OneTeacher(float(teacher_logit_softcap) if teacher_logit_softcap else None)
  kernel = online_tiles.OnlineKernel(
      tiling, teacher, None if divergence == "forward_kl" else divergence, param, diagnostics, top_k, gated
  )
  diagnose = jnp.asarray(True if diagnose is None else diagnose, bool)
  temperature = jnp.asarray(weights.temperature, jnp.float32)
  teacher_rows = (jax.lax.stop_gradient(teacher_hidden_BxSxD), labels_BxS.astype(jnp.int32))
  terms = tile_vjp.tiled_terms(
      kernel,
      student_hidden_BxSxD,
      student_unembed_DxV,
      teacher_rows,
      jax.lax.stop_gradient(teacher_unembed_DxV),
      (temperature, diagnose),
  )
  kl_at_t = terms["kl_t"]
  kl_at_1, teacher_ce = jax.lax.stop_gradient((terms["kl_1"], terms["ce_t"]))
  extra = {metric_names.TEACHER_LOSS: teacher_ce}
  extra.update(
      {metric: jax.lax.stop_gradient(terms[name]) for name, metric in _DIAGNOSTIC_METRICS.items() if name in terms}
  )

  objective_sum, count, metrics = objective.combine_terms(
      terms.get("div", kl_at_t),
      kl_at_t,
      kl_at_1,
      terms["ce_s"],
      mask_BxS,
      weights,
      extra=extra,
      student_features_LxBxSxD=student_features_LxBxSxD,
      teacher_features_LxBxSxD=teacher_features_LxBxSxD,
      feature_loss_type=feature_loss_type,
      student_lse_BxS=terms["lse_s"],
      z_loss_multiplier=z_loss_multiplier,
      feature_layers=feature_layers,
  )
  if gated:
    metrics = reductions.gate_pairs(metrics, metric_names.ONLINE_DIAGNOSTICS, diagnose)
  return objective_sum, count, metrics
