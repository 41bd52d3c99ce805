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

Online, both models' hidden states are at hand; offline batches (a cached top-k
teacher) take the same path through :mod:`chunked_sparse`, on the same tiles (:mod:`tiles`).

:func:`distillation_terms_from_hidden` returns exactly what
:func:`objective.distillation_terms` returns for ``logits = cap(hidden @ W)``,
but works on tiles of ``[B, seq_chunk]`` tokens by ``vocab_chunk`` columns:

  z = cap(h @ W) per tile, cap(u) = c * tanh(u / c) (MaxText's ``final_logits_soft_cap``, one c per model)
  or identity.
  Online over vocabulary tiles, per token and per distribution q in {s/1, s/T, t/1, t/T}:
    m_q = running max, l_q = sum exp(z_q - m_q), lse_q = m_q + log l_q,
    a_T = sum exp(z_t/T - m_tT) (z_t - z_s) / T,   a_1 = sum exp(z_t - m_t1) (z_t - z_s).
  KL(t_T || s_T) = a_T / l_tT - lse_tT + lse_sT,   KL at T=1 likewise,
  CE(student) = lse_s1 - z_s[label],   CE(teacher) = lse_t1 - z_t[label],
  and lse_s1 itself (MaxText's z-loss z * lse_s1^2).

A ``jax.custom_vjp`` keeps only the inputs and four ``[B, S]`` log-sum-exps;
the backward recomputes each tile's logits and applies the analytic gradient

  dL/dz_s = c_klT / T (p_sT - p_tT) + c_kl1 (p_s1 - p_t1) + c_ce (p_s1 - onehot(label)) + c_lse p_s1,

times ``1 - (z_s / c_s)^2`` under the student's soft cap, so no ``[B, S, V]`` array (logits,
softmax or one-hot) exists in the forward or the backward; the largest
temporaries are ``[B, seq_chunk, vocab_chunk]`` float32 tiles.

The teacher is a constant: its hidden states and unembedding are
``stop_gradient``. The temperature is a schedule value and gets no gradient.
Tiles run along the sequence axis, so a sharded batch axis stays sharded; a
sharded sequence axis (context parallelism) would be gathered per tile.
"""

import functools

import jax
import jax.numpy as jnp

from maxtext_distill_plugin import objective
from maxtext_distill_plugin import reductions
from maxtext_distill_plugin import tiles

DEFAULT_SEQ_CHUNK = tiles.DEFAULT_SEQ_CHUNK


def _forward_rows(tiling: tiles.Tiling, temperature, student_tiles, teacher_tiles, hs_BxCxD, ht_BxCxD, labels_BxC):
  """Per-token terms and log-sum-exps of one sequence chunk, scanning the vocabulary tiles."""
  shape = labels_BxC.shape
  empty = tiles.empty_online_state(shape)
  zeros = jnp.zeros(shape, jnp.float32)

  def body(carry, tile):
    s1, st, t1, tt, label_s, label_t = carry
    ws_DxK, wt_DxK, offset = tile
    zs, columns = tiles.tile_logits(hs_BxCxD, ws_DxK, offset, tiling.student_softcap)
    zt, _ = tiles.tile_logits(ht_BxCxD, wt_DxK, offset, tiling.teacher_softcap)
    valid = columns < tiling.vocab_size
    zs, zt = jnp.where(valid, zs, tiles.PADDED_LOGIT), jnp.where(valid, zt, tiles.PADDED_LOGIT)
    hit = columns == labels_BxC[..., None]
    diff = zt - zs
    carry = (
        tiles.online_update(s1, zs),
        tiles.online_update(st, zs / temperature),
        tiles.online_update(t1, zt, diff),
        tiles.online_update(tt, zt / temperature, diff / temperature),
        label_s + jnp.sum(jnp.where(hit, zs, 0.0), axis=-1),
        label_t + jnp.sum(jnp.where(hit, zt, 0.0), axis=-1),
    )
    return carry, None

  offsets = jnp.arange(student_tiles.shape[0]) * tiling.vocab_chunk
  init = (empty, empty, empty, empty, zeros, zeros)
  (s1, st, t1, tt, label_s, label_t), _ = jax.lax.scan(body, init, (student_tiles, teacher_tiles, offsets))
  lse_s1, lse_st, lse_t1, lse_tt = map(tiles.online_lse, (s1, st, t1, tt))
  kl_at_t = tt[2] / tt[1] - lse_tt + lse_st
  kl_at_1 = t1[2] / t1[1] - lse_t1 + lse_s1
  terms = (kl_at_t, kl_at_1, lse_s1 - label_s, lse_t1 - label_t, lse_s1)
  return terms, (lse_s1, lse_st, lse_t1, lse_tt)


def _backward_rows(tiling: tiles.Tiling, temperature, student_tiles, teacher_tiles, rows):
  """Gradients of one sequence chunk: ``d hidden [B, C, D]`` and ``d unembed`` tiles ``[N, D, K]``."""
  hs_BxCxD, ht_BxCxD, labels_BxC, lses, cotangents = rows
  lse_s1, lse_st, lse_t1, lse_tt = (lse[..., None] for lse in lses)
  cot_kl_t, cot_kl_1, cot_ce, cot_lse = (c[..., None] for c in cotangents)

  def body(d_hidden, tile):
    ws_DxK, wt_DxK, offset = tile
    zs_capped, columns = tiles.tile_logits(hs_BxCxD, ws_DxK, offset, tiling.student_softcap)
    zt, _ = tiles.tile_logits(ht_BxCxD, wt_DxK, offset, tiling.teacher_softcap)
    valid = columns < tiling.vocab_size
    zs, zt = jnp.where(valid, zs_capped, tiles.PADDED_LOGIT), jnp.where(valid, zt, tiles.PADDED_LOGIT)
    p_s1, p_st = jnp.exp(zs - lse_s1), jnp.exp(zs / temperature - lse_st)
    p_t1, p_tt = jnp.exp(zt - lse_t1), jnp.exp(zt / temperature - lse_tt)
    onehot = (columns == labels_BxC[..., None]).astype(jnp.float32)
    d_logits = cot_kl_t / temperature * (p_st - p_tt) + cot_kl_1 * (p_s1 - p_t1) + cot_ce * (p_s1 - onehot)
    d_logits = d_logits + cot_lse * p_s1
    if tiling.student_softcap:
      d_logits = d_logits * (1.0 - jnp.square(zs_capped / tiling.student_softcap))
    d_hidden = d_hidden + jnp.einsum("bck,dk->bcd", d_logits, ws_DxK, preferred_element_type=jnp.float32)
    d_unembed = jnp.einsum("bcd,bck->dk", hs_BxCxD, d_logits, preferred_element_type=jnp.float32)
    return d_hidden, d_unembed

  offsets = jnp.arange(student_tiles.shape[0]) * tiling.vocab_chunk
  init = jnp.zeros(hs_BxCxD.shape, jnp.float32)
  return jax.lax.scan(body, init, (student_tiles, teacher_tiles, offsets))


def _vocab_terms_fwd(
    tiling: tiles.Tiling, student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp
):
  seq = labels.shape[1]
  student_tiles = tiles.vocab_tiles(student_unembed, tiling.vocab_chunk)
  teacher_tiles = tiles.vocab_tiles(teacher_unembed, tiling.vocab_chunk)
  rows = tuple(tiles.seq_tiles(x, tiling.seq_chunk) for x in (student_hidden, teacher_hidden, labels))
  step = functools.partial(_forward_rows, tiling, temp, student_tiles, teacher_tiles)
  _, (terms, lses) = jax.lax.scan(lambda carry, row: (carry, step(*row)), None, rows)
  terms_BxS = tuple(tiles.from_seq_tiles(term, seq) for term in terms)
  return terms_BxS, (student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp, lses)


def _vocab_terms_bwd(tiling: tiles.Tiling, residuals, cotangents):
  student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp, lses = residuals
  # Teacher CE depends on the teacher only, which is a constant here: its cotangent is dropped.
  kept = cotangents[:3] + cotangents[4:]
  cotangents = tuple(tiles.seq_tiles(c.astype(jnp.float32), tiling.seq_chunk) for c in kept)
  student_tiles = tiles.vocab_tiles(student_unembed, tiling.vocab_chunk)
  teacher_tiles = tiles.vocab_tiles(teacher_unembed, tiling.vocab_chunk)
  rows = tuple(tiles.seq_tiles(x, tiling.seq_chunk) for x in (student_hidden, teacher_hidden, labels))

  def body(d_unembed_tiles, row):
    d_hidden, d_tiles = _backward_rows(tiling, temp, student_tiles, teacher_tiles, row)
    return d_unembed_tiles + d_tiles, d_hidden

  init = jnp.zeros(student_tiles.shape, jnp.float32)
  d_unembed_tiles, d_hidden = jax.lax.scan(body, init, rows[:3] + (lses, cotangents))
  d_unembed = tiles.from_vocab_tiles(d_unembed_tiles, tiling.vocab_size)
  d_hidden = tiles.from_seq_tiles(d_hidden, labels.shape[1])
  return d_hidden.astype(student_hidden.dtype), d_unembed.astype(student_unembed.dtype), None, None, None, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _vocab_terms(tiling: tiles.Tiling, student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp):
  """``(KL at T, KL at 1, student CE, teacher CE, student lse)``, each ``[B, S]``, from hidden states."""
  terms, _ = _vocab_terms_fwd(tiling, student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp)
  return terms


_vocab_terms.defvjp(_vocab_terms_fwd, _vocab_terms_bwd)


def distillation_terms_from_hidden(
    student_hidden_BxSxD: jnp.ndarray,
    student_unembed_DxV: jnp.ndarray,
    teacher_hidden_BxSxD: jnp.ndarray,
    teacher_unembed_DxV: jnp.ndarray,
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
    teacher_logit_softcap: float | None = None,
    z_loss_multiplier: float = 0.0,
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
    z_loss_multiplier: MaxText's z-loss on the student (:func:`objective.combine_terms`).

  Returns:
    ``(objective_sum, count, metrics)`` with the same meaning, names and
    gradients (w.r.t. the student) as :func:`objective.distillation_terms`.
  """
  batch, seq, _ = student_hidden_BxSxD.shape
  vocab = student_unembed_DxV.shape[1]
  if teacher_unembed_DxV.shape[1] != vocab:
    raise ValueError(f"student vocabulary {vocab} != teacher vocabulary {teacher_unembed_DxV.shape[1]}")
  for name, hidden, unembed in (
      ("student", student_hidden_BxSxD, student_unembed_DxV),
      ("teacher", teacher_hidden_BxSxD, teacher_unembed_DxV),
  ):
    if hidden.shape[:2] != (batch, seq) or hidden.shape[2] != unembed.shape[0]:
      raise ValueError(f"{name} hidden {hidden.shape} does not match [B={batch}, S={seq}, D] @ {unembed.shape}")
  if labels_BxS.shape != (batch, seq) or mask_BxS.shape != (batch, seq):
    raise ValueError(f"labels {labels_BxS.shape} and mask {mask_BxS.shape} must be [B={batch}, S={seq}]")
  tiling = tiles.make_tiling(seq, vocab, seq_chunk, vocab_chunk, student_logit_softcap, teacher_logit_softcap)
  temperature = jnp.asarray(weights.temperature, jnp.float32)
  kl_at_t, kl_at_1, student_ce, teacher_ce, student_lse = _vocab_terms(
      tiling,
      student_hidden_BxSxD,
      student_unembed_DxV,
      jax.lax.stop_gradient(teacher_hidden_BxSxD),
      jax.lax.stop_gradient(teacher_unembed_DxV),
      labels_BxS.astype(jnp.int32),
      temperature,
  )
  kl_at_1, teacher_ce = jax.lax.stop_gradient((kl_at_1, teacher_ce))

  return objective.combine_terms(
      kl_at_t,
      kl_at_t,
      kl_at_1,
      student_ce,
      mask_BxS,
      weights,
      extra={"distill/teacher_loss": teacher_ce},
      student_features_LxBxSxD=student_features_LxBxSxD,
      teacher_features_LxBxSxD=teacher_features_LxBxSxD,
      feature_loss_type=feature_loss_type,
      student_lse_BxS=student_lse,
      z_loss_multiplier=z_loss_multiplier,
  )
