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

"""The offline distillation objective from the student's final hidden states, without ``[B, S, V]`` logits.

Offline, the teacher is a cached top-k (ids, log-probabilities, tail log-mass and its Renyi entropies), and the
loss needs only four statistics of the student's logits ``z = cap(h @ W)`` per token
(:class:`cached_objective.StudentHeadStats`):

  lse_1 = logsumexp(z),  lse_T = logsumexp(z / T),  z[label],  z_ids = z[teacher top-k ids]  ``[B, S, k]``,

and, for the diagnostics only (no gradient), ``max_v z_v`` and the entropy ``lse_1 - sum_v q_v z_v`` at T = 1.

:func:`student_head_stats_from_hidden` computes them on tiles of ``[B, seq_chunk]`` tokens
by ``vocab_chunk`` columns (a kernel plugged into :mod:`tile_vjp`): both log-sum-exps online over the
vocabulary tiles, and ``z[label]`` and ``z_ids`` gathered from the tile that holds each id. The KL, the CE and
every metric then follow from :func:`cached_objective.cached_teacher_terms`, the same formula
the dense offline loss applies to full logits, so
:func:`offline_distillation_terms_from_hidden` returns exactly what
:func:`objective.distillation_terms` returns for ``logits = cap(hidden @ W)`` and a
top-k teacher (:class:`heads.CachedTopK`).

The skeleton's custom VJP keeps only the inputs and the two ``[B, S]`` log-sum-exps; the
backward recomputes each tile's logits and applies

  dL/dz = g_lse1 p_1 + g_lseT p_T / T + g_label onehot(label) + sum_j g_ids[j] onehot(ids[j]),

(the last term a scatter-add into the tile, never a ``[B, C, k, V]`` one-hot), times
``1 - (z / c)^2`` under a soft cap. The gradients ``g`` of the statistics come from
ordinary autodiff of the sparse KL and CE, which act on ``[B, S, k]`` arrays only. No
``[B, S, V]`` array exists in the forward or the backward; the largest temporaries are
``[B, seq_chunk, vocab_chunk]`` float32 tiles. The temperature gets no gradient.
"""

import dataclasses

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import cached_objective
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.loss import sparse_losses
from maxtext_distill_plugin.loss import tile_vjp
from maxtext_distill_plugin.loss import tiles


def _tile_columns(ids_BxCxK, offset, chunk: int):
  """Tile-local columns of the ids and whether each id lies in the tile ``[offset, offset + chunk)``."""
  local = ids_BxCxK - offset
  return local, (local >= 0) & (local < chunk)


@dataclasses.dataclass(frozen=True)
class _HeadStatsKernel:
  """The student's head statistics as a :class:`tile_vjp.TileKernel`: row inputs ``(labels, ids)``, no column
  inputs, scalars ``(temperature,)``; outputs ``(lse_1, lse_T, z[label], z_ids, max z, entropy at T = 1)``."""

  tiling: tiles.Tiling

  def forward_row(self, scalars, unembed_tiles, column_tiles, hidden_BxCxD, row_inputs):
    """The statistics of one sequence tile, scanning the vocabulary tiles; residuals ``(lse_1, lse_T)``."""
    (temperature,) = scalars
    labels_BxC, ids_BxCxK = row_inputs
    tiling = self.tiling
    shape = labels_BxC.shape

    def body(carry, tile):
      at_1, at_t, at_label, at_ids = carry
      unembed_DxN, _, offset = tile
      logits, columns = tiles.tile_logits(hidden_BxCxD, unembed_DxN, offset, tiling.student_softcap)
      logits = jnp.where(columns < tiling.vocab_size, logits, tiles.PADDED_LOGIT)
      local, inside = _tile_columns(ids_BxCxK, offset, tiling.vocab_chunk)
      gathered = jnp.take_along_axis(logits, jnp.clip(local, 0, tiling.vocab_chunk - 1), axis=-1)
      carry = (
          tiles.online_update(at_1, logits, logits),  # also sum exp(z - m) z: the entropy lse - E_q[z]
          tiles.online_update(at_t, logits / temperature),
          at_label + jnp.sum(jnp.where(columns == labels_BxC[..., None], logits, 0.0), axis=-1),
          at_ids + jnp.where(inside, gathered, 0.0),
      )
      return carry, None

    empty = tiles.empty_online_state(shape)
    init = (empty, empty, jnp.zeros(shape, jnp.float32), jnp.zeros(ids_BxCxK.shape, jnp.float32))
    (at_1, at_t, at_label, at_ids), _ = tile_vjp.over_vocab(body, init, unembed_tiles, column_tiles, tiling.vocab_chunk)
    lse_1 = tiles.online_lse(at_1)
    entropy = lse_1 - at_1[2] / at_1[1]
    lse_t = tiles.online_lse(at_t)
    return (lse_1, lse_t, at_label, at_ids, at_1[0], entropy), (lse_1, lse_t)

  def sweep(self, run, scalars):
    del scalars  # one sweep, always
    return run(self)

  def differentiable(self, cotangents):
    """The max logit and the entropy are diagnostics: no gradient flows through them."""
    return cotangents[:4]

  def logit_cotangent(self, scalars, row_inputs, residuals, cotangents):
    """``dL/dz`` of each tile (the formula in the module docstring)."""
    (temperature,) = scalars
    labels_BxC, ids_BxCxK = row_inputs
    lse_1, lse_t = residuals
    g_lse_1, g_lse_t, g_label, g_ids = cotangents
    tiling = self.tiling
    batch, chunk = labels_BxC.shape
    # Index grids for the scatter-add of g_ids: one (row, position, column) triple per id.
    rows_Bx1x1 = jnp.arange(batch)[:, None, None]
    positions_1xCx1 = jnp.arange(chunk)[None, :, None]

    def tile_cotangent(capped, columns, column_tiles, offset):
      del column_tiles  # none
      logits = jnp.where(columns < tiling.vocab_size, capped, tiles.PADDED_LOGIT)
      p_1 = jnp.exp(logits - lse_1[..., None])
      p_t = jnp.exp(logits / temperature - lse_t[..., None])
      d_logits = g_lse_1[..., None] * p_1 + (g_lse_t / temperature)[..., None] * p_t
      d_logits = d_logits + jnp.where(columns == labels_BxC[..., None], g_label[..., None], 0.0)
      local, inside = _tile_columns(ids_BxCxK, offset, tiling.vocab_chunk)
      # Ids outside this tile go to column vocab_chunk, past the end, which mode="drop" discards.
      local = jnp.where(inside, local, tiling.vocab_chunk)
      return d_logits.at[rows_Bx1x1, positions_1xCx1, local].add(g_ids, mode="drop")

    return tile_cotangent


def student_head_stats_from_hidden(
    hidden_BxSxD: jnp.ndarray,
    unembed_DxV: jnp.ndarray,
    ids_BxSxK: jnp.ndarray,
    labels_BxS: jnp.ndarray,
    temperature,
    *,
    seq_chunk: int = tiles.DEFAULT_SEQ_CHUNK,
    vocab_chunk: int | None = None,
    logit_softcap: float | None = None,
) -> cached_objective.StudentHeadStats:
  """:func:`cached_objective.student_head_stats` of ``cap(hidden @ unembed)``, tile by tile.

  Args:
    hidden_BxSxD: ``[B, S, D]`` final hidden states (after the final norm), any float dtype; gradients flow here.
    unembed_DxV: ``[D, V]`` output projection; gradients flow here.
    ids_BxSxK: ``[B, S, k]`` vocabulary ids to gather (the teacher's top-k), in ``[0, V)``.
    labels_BxS: ``[B, S]`` integer targets in ``[0, V)``.
    temperature: positive scalar T (may be traced; gets no gradient).
    seq_chunk: sequence positions per tile (all B rows at once); S need not divide by it.
    vocab_chunk: vocabulary columns per tile, or None for the whole vocabulary (V need not divide by it).
    logit_softcap: ``c`` of ``c * tanh(z / c)`` (MaxText's ``final_logits_soft_cap``), or None.

  Returns:
    The float32 statistics, differentiable w.r.t. ``hidden_BxSxD`` and ``unembed_DxV``.
  """
  batch, seq, dim = hidden_BxSxD.shape
  if unembed_DxV.shape[0] != dim:
    raise ValueError(f"hidden {hidden_BxSxD.shape} does not match [B={batch}, S={seq}, D] @ {unembed_DxV.shape}")
  if labels_BxS.shape != (batch, seq) or ids_BxSxK.shape[:2] != (batch, seq):
    raise ValueError(f"labels {labels_BxS.shape} and ids {ids_BxSxK.shape} must start with [B={batch}, S={seq}]")
  tiling = tiles.make_tiling(seq, unembed_DxV.shape[1], seq_chunk, vocab_chunk, logit_softcap)
  lse_1, lse_t, at_label, at_ids, max_logit, entropy = tile_vjp.tiled_terms(
      _HeadStatsKernel(tiling),
      hidden_BxSxD,
      unembed_DxV,
      (labels_BxS.astype(jnp.int32), ids_BxSxK.astype(jnp.int32)),
      (),
      (jnp.asarray(temperature, jnp.float32),),
  )
  max_logit, entropy = jax.lax.stop_gradient((max_logit, entropy))
  return cached_objective.StudentHeadStats(lse_1, lse_t, at_label, at_ids, max_logit, entropy)


def offline_distillation_terms_from_hidden(
    student_hidden_BxSxD: jnp.ndarray,
    student_unembed_DxV: jnp.ndarray,
    teacher: heads.CachedTopK,
    labels_BxS: jnp.ndarray,
    mask_BxS: jnp.ndarray,
    weights: objective.LossWeights,
    *,
    student_features_LxBxSxD: jnp.ndarray | None = None,
    feature_loss_type: str = "cosine",
    seq_chunk: int = tiles.DEFAULT_SEQ_CHUNK,
    vocab_chunk: int | None = None,
    student_logit_softcap: float | None = None,
    z_loss_multiplier: float = 0.0,
    divergence: str = "forward_kl",
    divergence_param: float | None = None,
    feature_layers: tuple[int, ...] | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, reductions.SumCount]]:
  """:func:`objective.distillation_terms` of ``cap(hidden @ unembed)`` against a cached top-k teacher, tile by tile.

  Args:
    student_hidden_BxSxD: ``[B, S, D]`` student final hidden states (after the final norm); gradients flow here.
    student_unembed_DxV: ``[D, V]`` student output projection; gradients flow here.
    teacher: the cached top-k teacher.
    labels_BxS: ``[B, S]`` integer targets in ``[0, V)``.
    mask_BxS: ``[B, S]`` validity (padding is false).
    weights: scheduled alpha, temperature and beta.
    student_features_LxBxSxD: student features of the same layers as the teacher's, or None.
    feature_loss_type: ``"cosine"`` or ``"l2"``.
    seq_chunk: sequence positions per tile (all B rows at once); S need not divide by it.
    vocab_chunk: vocabulary columns per tile, or None for the whole vocabulary (V need not divide by it).
    student_logit_softcap: ``c`` of ``c * tanh(z / c)`` on the student's logits, or None.
    z_loss_multiplier: MaxText's z-loss on the student (:func:`objective.combine_terms`).
    divergence: the optimised divergence, a :data:`divergences.DIVERGENCES` name (static).
    divergence_param: its parameter, or None for its default (static).
    feature_layers: the student's layer index of each feature row, for the per-layer metrics (static).

  Returns:
    ``(objective_sum, count, metrics)`` with the same meaning, names and
    gradients as :func:`objective.distillation_terms`.
  """
  if not isinstance(teacher, heads.CachedTopK):
    raise ValueError(f"the teacher must be a cached top-k (heads.CachedTopK), got a {type(teacher).__name__}")
  batch, seq, _ = student_hidden_BxSxD.shape
  vocab = student_unembed_DxV.shape[1]
  sparse_losses.check_teacher(
      (batch, seq),
      teacher.topk_ids_BxSxK,
      teacher.topk_logprobs_BxSxK,
      teacher.tail_logmass_BxS,
      teacher.tail,
      vocab,
      teacher.tail_renyi_BxSxR,
  )
  if labels_BxS.shape != (batch, seq) or mask_BxS.shape != (batch, seq):
    raise ValueError(f"labels {labels_BxS.shape} and mask {mask_BxS.shape} must be [B={batch}, S={seq}]")
  stats = student_head_stats_from_hidden(
      student_hidden_BxSxD,
      student_unembed_DxV,
      teacher.topk_ids_BxSxK,
      labels_BxS,
      weights.temperature,
      seq_chunk=seq_chunk,
      vocab_chunk=vocab_chunk,
      logit_softcap=student_logit_softcap,
  )
  divergence_at_T, kl_at_T, kl_at_1, student_ce, extra = cached_objective.cached_teacher_terms(
      stats, teacher, weights.temperature, vocab, divergence=divergence, divergence_param=divergence_param
  )
  return objective.combine_terms(
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
      student_lse_BxS=stats.lse_BxS,
      z_loss_multiplier=z_loss_multiplier,
      feature_layers=feature_layers,
  )
