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

:func:`distillation_terms_from_hidden` returns exactly what the dense objective returns for
``logits = cap(hidden @ W)``, but works on tiles of ``[B, seq_chunk]`` tokens by ``vocab_chunk`` columns:

  z = cap(h @ W) per tile, cap(u) = c * tanh(u / c) (MaxText's ``final_logits_soft_cap``, one c per model)
  or identity.
  Sweep 1, online over vocabulary tiles, per token and per distribution q in {s/1, s/T, t/1, t/T}:
    m_q = running max, l_q = sum exp(z_q - m_q), lse_q = m_q + log l_q,
    a_T = sum exp(z_t/T - m_tT) (z_t - z_s) / T,   a_1 = sum exp(z_t - m_t1) (z_t - z_s).
  KL(t_T || s_T) = a_T / l_tT - lse_tT + lse_sT,   KL at T=1 likewise,
  CE(student) = lse_s1 - z_s[label],   CE(teacher) = lse_t1 - z_t[label],
  and lse_s1 itself (MaxText's z-loss z * lse_s1^2).
  Sweep 2 (any divergence but forward KL, which sweep 1 already gives): with the log-probabilities
  log p_v = z_t,v / T - lse_tT and log q_v = z_s,v / T - lse_sT, the registry's elementwise form e_v
  (:mod:`divergences`) and its diagonal partial g_v = de_v / dlog q_v:
    D = max(sum_v e_v, 0) (clamped straight-through, as the dense path),   G = sum_v g_v.

A ``jax.custom_vjp`` keeps only the inputs, four ``[B, S]`` log-sum-exps (and G);
the backward recomputes each tile's logits and applies the analytic gradient

  dL/dz_s = c_klT / T (p_sT - p_tT) + c_kl1 (p_s1 - p_t1) + c_ce (p_s1 - onehot(label)) + c_lse p_s1
            + c_D (g - q_T G) / T,

times ``1 - (z_s / c_s)^2`` under the student's soft cap. Every divergence shares this one
skeleton; only e and g come from the registry. No ``[B, S, V]`` array (logits, softmax or one-hot)
exists in the forward or the backward; the largest temporaries are ``[B, seq_chunk, vocab_chunk]`` tiles.

Diagnostics (``diagnostics=True``; gradient-free, their cotangents are dropped) come out of sweep 1:
top-1 agreement (running max and first argmax per model), entropies at T = 1,
``H = lse_1 - sum exp(z - m) z / l``, and the teacher's mass in its top-k at T = 1 (a running top-k).

The teacher is a constant: its hidden states and unembedding are
``stop_gradient``. The temperature is a schedule value and gets no gradient.
Tiles run along the sequence axis, so a sharded batch axis stays sharded; a
sharded sequence axis (context parallelism) would be gathered per tile.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import divergences
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.loss import teacher_mixture
from maxtext_distill_plugin.loss import tiles

DEFAULT_SEQ_CHUNK = tiles.DEFAULT_SEQ_CHUNK
# Per-token outputs of the custom VJP that carry no gradient (the teacher's CE and the diagnostics).
_GRADIENT_FREE = ("ce_t", "top1", "entropy_t", "entropy_s", "coverage")
_DIAGNOSTIC_METRICS = {
    "top1": metric_names.TOP1_AGREEMENT,
    "entropy_t": metric_names.TEACHER_ENTROPY,
    "entropy_s": metric_names.STUDENT_ENTROPY,
    "coverage": metric_names.TOPK_COVERAGE,
}


@dataclasses.dataclass(frozen=True)
class _Options:
  """Static options of one tiled objective (hashable: a ``nondiff_argnums`` argument).

  ``divergence`` None is forward KL, which sweep 1 alone gives (the fast path); ``top_k`` None: no coverage.
  """

  tiling: tiles.Tiling
  divergence: str | None = None
  param: float | None = None
  diagnostics: bool = False
  top_k: int | None = None
  gated: bool = False  # the diagnostics are computed only where the traced flag ``diagnose`` is true
  # Several teachers mixed per token (teacher_mixture): their weights and soft caps; None: one teacher.
  teacher_weights: tuple[float, ...] | None = None
  member_softcaps: tuple[float | None, ...] | None = None


def _tile_logits(options: _Options, hs_BxCxD, ht_BxCxD, ws_DxK, wt_DxK, offset, temperature=None, members=None):
  """Capped student logits, the teacher's logits with padded columns masked, the column ids and their validity.

  The teacher's logits come twice, ``(zt1, ztT)``: ``softmax(zt1)`` is the teacher at T = 1 and ``softmax(ztT / T)``
  the teacher at T. One teacher: both are its logits (the same array). A mixture (``members``: each member's
  ``(lse at 1, lse at T)``, ``[B, C, 1]``): its normalised log-probabilities at 1, and T times those at T.
  """
  tiling = options.tiling
  zs_capped, columns = tiles.tile_logits(hs_BxCxD, ws_DxK, offset, tiling.student_softcap)
  valid = columns < tiling.vocab_size
  zs = jnp.where(valid, zs_capped, tiles.PADDED_LOGIT)
  if options.teacher_weights is None:
    zt, _ = tiles.tile_logits(ht_BxCxD, wt_DxK, offset, tiling.teacher_softcap)
    zt = jnp.where(valid, zt, tiles.PADDED_LOGIT)
    return zs_capped, zs, zt, zt, columns, valid
  member_logits = [
      tiles.tile_logits(h, w, offset, cap)[0] for h, w, cap in zip(ht_BxCxD, wt_DxK, options.member_softcaps)
  ]
  at_1 = teacher_mixture.mix(
      jnp.stack([z - lse_1 for z, (lse_1, _) in zip(member_logits, members)]), options.teacher_weights
  )
  at_T = teacher_mixture.mix(
      jnp.stack([z / temperature - lse_T for z, (_, lse_T) in zip(member_logits, members)]), options.teacher_weights
  )
  return (
      zs_capped,
      zs,
      jnp.where(valid, at_1, tiles.PADDED_LOGIT),
      jnp.where(valid, temperature * at_T, tiles.PADDED_LOGIT),
      columns,
      valid,
  )


def _member_lses(options: _Options, temperature, teacher_tiles, ht_BxCxD):
  """Each mixed teacher's ``(lse at 1, lse at T)`` ``[B, C, 1]`` over the vocabulary, one sweep over its tiles; ``()``
  for one teacher."""
  if options.teacher_weights is None:
    return ()
  shape = ht_BxCxD[0].shape[:2]

  def body(carry, tile):
    wt_tiles, offset = tile
    valid = offset + jnp.arange(wt_tiles[0].shape[-1]) < options.tiling.vocab_size
    new = []
    for (at_1, at_T), h, w, cap in zip(carry, ht_BxCxD, wt_tiles, options.member_softcaps):
      z = jnp.where(valid, tiles.tile_logits(h, w, offset, cap)[0], tiles.PADDED_LOGIT)
      new.append((tiles.online_update(at_1, z), tiles.online_update(at_T, z / temperature)))
    return tuple(new), None

  offsets = jnp.arange(teacher_tiles[0].shape[0]) * options.tiling.vocab_chunk
  init = tuple((tiles.empty_online_state(shape), tiles.empty_online_state(shape)) for _ in ht_BxCxD)
  found, _ = jax.lax.scan(body, init, (teacher_tiles, offsets))
  return tuple((tiles.online_lse(a)[..., None], tiles.online_lse(b)[..., None]) for a, b in found)


def _partials(options: _Options, zs, zt, lse_st, lse_tt, temperature, valid):
  # zt: the teacher's logits at T times T (ztT of _tile_logits).
  """``(e_v, g_v)`` of the chosen divergence on one tile, 0 on padded columns; lses are ``[B, C, 1]``."""
  elementwise = divergences.lookup(options.divergence).elementwise
  teacher_logp, student_logp = zt / temperature - lse_tt, zs / temperature - lse_st
  e, g = divergences.student_partials(elementwise, teacher_logp, student_logp, param=options.param)
  return jnp.where(valid, e, 0.0), jnp.where(valid, g, 0.0)


def _forward_rows(options: _Options, temperature, student_tiles, teacher_tiles, hs_BxCxD, ht_BxCxD, labels_BxC):
  """Per-token terms (a dict of ``[B, C]``) and residuals of one sequence chunk, scanning the vocabulary tiles."""
  shape = labels_BxC.shape
  empty = tiles.empty_online_state(shape)
  zeros = jnp.zeros(shape, jnp.float32)
  diagnostics = options.diagnostics
  members = _member_lses(options, temperature, teacher_tiles, ht_BxCxD)

  def body(carry, tile):
    ws_DxK, wt_DxK, offset = tile
    _, zs, zt, zt_T, columns, _ = _tile_logits(options, hs_BxCxD, ht_BxCxD, ws_DxK, wt_DxK, offset, temperature, members)
    hit = columns == labels_BxC[..., None]
    diff = zt - zs
    diff_T = diff if zt_T is zt else zt_T - zs
    new = {
        "s1": tiles.online_update(carry["s1"], zs, zs if diagnostics else None),
        "st": tiles.online_update(carry["st"], zs / temperature),
        "t1": tiles.online_update(carry["t1"], zt, (diff, zt) if diagnostics else diff),
        "tt": tiles.online_update(carry["tt"], zt_T / temperature, diff_T / temperature),
        "label_s": carry["label_s"] + jnp.sum(jnp.where(hit, zs, 0.0), axis=-1),
        "label_t": carry["label_t"] + jnp.sum(jnp.where(hit, zt, 0.0), axis=-1),
    }
    if diagnostics:
      for name, state, logits in (("argmax_s", "s1", zs), ("argmax_t", "t1", zt)):
        new[name] = tiles.running_argmax(carry[name], carry[state][0], new[state][0], logits, offset)
    if options.top_k:
      new["top_t"] = tiles.running_top_k(carry["top_t"], zt)
    return new, None

  offsets = jnp.arange(student_tiles.shape[0]) * options.tiling.vocab_chunk
  init = {"s1": empty, "st": empty, "t1": empty, "tt": empty, "label_s": zeros, "label_t": zeros}
  if diagnostics:
    init["t1"] = (empty[0], empty[1], (zeros, zeros))
    init["argmax_s"] = init["argmax_t"] = jnp.zeros(shape, jnp.int32)
  if options.top_k:
    init["top_t"] = jnp.full(shape + (options.top_k,), -jnp.inf, jnp.float32)
  out, _ = jax.lax.scan(body, init, (student_tiles, teacher_tiles, offsets))
  s1, st, t1, tt = out["s1"], out["st"], out["t1"], out["tt"]
  lse_s1, lse_st, lse_t1, lse_tt = map(tiles.online_lse, (s1, st, t1, tt))
  a_1, teacher_moment = t1[2] if diagnostics else (t1[2], None)
  terms = {
      "kl_t": tt[2] / tt[1] - lse_tt + lse_st,
      "kl_1": a_1 / t1[1] - lse_t1 + lse_s1,
      "ce_s": lse_s1 - out["label_s"],
      "ce_t": lse_t1 - out["label_t"],
      "lse_s": lse_s1,
  }
  if diagnostics:
    terms["top1"] = (out["argmax_s"] == out["argmax_t"]).astype(jnp.float32)
    terms["entropy_t"] = lse_t1 - teacher_moment / t1[1]
    terms["entropy_s"] = lse_s1 - s1[2] / s1[1]
  if options.top_k:
    terms["coverage"] = jnp.sum(jnp.exp(out["top_t"] - lse_t1[..., None]), axis=-1)
  sum_g = ()
  if options.divergence is not None:
    terms["div"], sum_g = _divergence_rows(
        options, temperature, student_tiles, teacher_tiles, hs_BxCxD, ht_BxCxD, lse_st, lse_tt, members
    )
  return terms, (lse_s1, lse_st, lse_t1, lse_tt, sum_g, members)


def _divergence_rows(
    options: _Options, temperature, student_tiles, teacher_tiles, hs_BxCxD, ht_BxCxD, lse_st, lse_tt, members
):
  """Sweep 2 of one sequence chunk: ``(D, G)``, each ``[B, C]``: the clamped ``sum_v e_v`` and ``sum_v g_v``."""
  lse_st, lse_tt = lse_st[..., None], lse_tt[..., None]

  def body(carry, tile):
    ws_DxK, wt_DxK, offset = tile
    _, zs, _, zt_T, _, valid = _tile_logits(options, hs_BxCxD, ht_BxCxD, ws_DxK, wt_DxK, offset, temperature, members)
    e, g = _partials(options, zs, zt_T, lse_st, lse_tt, temperature, valid)
    return (carry[0] + jnp.sum(e, axis=-1), carry[1] + jnp.sum(g, axis=-1)), None

  offsets = jnp.arange(student_tiles.shape[0]) * options.tiling.vocab_chunk
  zeros = jnp.zeros(lse_st.shape[:-1], jnp.float32)
  (sum_e, sum_g), _ = jax.lax.scan(body, (zeros, zeros), (student_tiles, teacher_tiles, offsets))
  # The dense path's clamp at 0: rounding never makes the value negative; the backward ignores it (straight-through).
  return jnp.where(sum_e < 0.0, 0.0, sum_e), sum_g


def _backward_rows(options: _Options, temperature, student_tiles, teacher_tiles, rows):
  """Gradients of one sequence chunk: ``d hidden [B, C, D]`` and ``d unembed`` tiles ``[N, D, K]``."""
  tiling = options.tiling
  hs_BxCxD, ht_BxCxD, labels_BxC, lses, cotangents = rows
  lse_s1, lse_st, lse_t1, lse_tt = (lse[..., None] for lse in lses[:4])
  sum_g, members = lses[4:]
  cot_kl_t, cot_kl_1, cot_ce, cot_lse = (cotangents[name][..., None] for name in ("kl_t", "kl_1", "ce_s", "lse_s"))

  def body(d_hidden, tile):
    ws_DxK, wt_DxK, offset = tile
    zs_capped, zs, zt, zt_T, columns, valid = _tile_logits(
        options, hs_BxCxD, ht_BxCxD, ws_DxK, wt_DxK, offset, temperature, members
    )
    p_s1, p_st = jnp.exp(zs - lse_s1), jnp.exp(zs / temperature - lse_st)
    p_t1, p_tt = jnp.exp(zt - lse_t1), jnp.exp(zt_T / temperature - lse_tt)
    onehot = (columns == labels_BxC[..., None]).astype(jnp.float32)
    d_logits = cot_kl_t / temperature * (p_st - p_tt) + cot_kl_1 * (p_s1 - p_t1) + cot_ce * (p_s1 - onehot)
    d_logits = d_logits + cot_lse * p_s1
    if options.divergence is not None:
      # dD/dz_v = (g_v - q_v sum_u g_u) / T through log q = z / T - lse(z / T); G = sum_u g_u from the forward.
      _, g = _partials(options, zs, zt_T, lse_st, lse_tt, temperature, valid)
      d_logits = d_logits + cotangents["div"][..., None] / temperature * (g - p_st * sum_g[..., None])
    if tiling.student_softcap:
      d_logits = d_logits * (1.0 - jnp.square(zs_capped / tiling.student_softcap))
    d_hidden = d_hidden + jnp.einsum("bck,dk->bcd", d_logits, ws_DxK, preferred_element_type=jnp.float32)
    d_unembed = jnp.einsum("bcd,bck->dk", hs_BxCxD, d_logits, preferred_element_type=jnp.float32)
    return d_hidden, d_unembed

  offsets = jnp.arange(student_tiles.shape[0]) * tiling.vocab_chunk
  init = jnp.zeros(hs_BxCxD.shape, jnp.float32)
  return jax.lax.scan(body, init, (student_tiles, teacher_tiles, offsets))


def _vocab_terms_fwd(
    options: _Options, student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp, diagnose
):
  seq = labels.shape[1]
  student_tiles = tiles.vocab_tiles(student_unembed, options.tiling.vocab_chunk)
  teacher_tiles = jax.tree.map(lambda w: tiles.vocab_tiles(w, options.tiling.vocab_chunk), teacher_unembed)
  rows = tuple(
      jax.tree.map(lambda x: tiles.seq_tiles(x, options.tiling.seq_chunk), x)
      for x in (student_hidden, teacher_hidden, labels)
  )

  def sweep(sweep_options: _Options):
    step = functools.partial(_forward_rows, sweep_options, temp, student_tiles, teacher_tiles)
    _, (terms, lses) = jax.lax.scan(lambda carry, row: (carry, step(*row)), None, rows)
    return terms, lses

  if options.gated and (options.diagnostics or options.top_k):
    plain = dataclasses.replace(options, diagnostics=False, top_k=None)

    def without_diagnostics():
      terms, lses = sweep(plain)
      names = (("top1", "entropy_t", "entropy_s") if options.diagnostics else ()) + (("coverage",) * bool(options.top_k))
      return {**terms, **{name: jnp.zeros_like(terms["ce_t"]) for name in names}}, lses

    # Only the sweep differs: the diagnostics' extra passes over each tile (a running top-k among them) run on
    # the steps that ask for them; the backward never reads them.
    terms, lses = jax.lax.cond(diagnose, lambda: sweep(options), without_diagnostics)
  else:
    terms, lses = sweep(options)
  terms_BxS = {name: tiles.from_seq_tiles(term, seq) for name, term in terms.items()}
  return terms_BxS, (student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp, lses)


def _vocab_terms_bwd(options: _Options, residuals, cotangents):
  student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp, lses = residuals
  tiling = options.tiling
  # The teacher's CE and the diagnostics depend on no student parameter through a gradient: cotangents dropped.
  cotangents = {
      name: tiles.seq_tiles(c.astype(jnp.float32), tiling.seq_chunk)
      for name, c in cotangents.items()
      if name not in _GRADIENT_FREE
  }
  student_tiles = tiles.vocab_tiles(student_unembed, tiling.vocab_chunk)
  teacher_tiles = jax.tree.map(lambda w: tiles.vocab_tiles(w, tiling.vocab_chunk), teacher_unembed)
  rows = tuple(
      jax.tree.map(lambda x: tiles.seq_tiles(x, tiling.seq_chunk), x) for x in (student_hidden, teacher_hidden, labels)
  )

  def body(d_unembed_tiles, row):
    d_hidden, d_tiles = _backward_rows(options, temp, student_tiles, teacher_tiles, row)
    return d_unembed_tiles + d_tiles, d_hidden

  init = jnp.zeros(student_tiles.shape, jnp.float32)
  d_unembed_tiles, d_hidden = jax.lax.scan(body, init, rows + (lses, cotangents))
  d_unembed = tiles.from_vocab_tiles(d_unembed_tiles, tiling.vocab_size)
  d_hidden = tiles.from_seq_tiles(d_hidden, labels.shape[1])
  return d_hidden.astype(student_hidden.dtype), d_unembed.astype(student_unembed.dtype), None, None, None, None, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _vocab_terms(
    options: _Options, student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp, diagnose
):
  """Per-token terms ``{name: [B, S]}`` from hidden states: ``kl_t``, ``kl_1``, ``ce_s``, ``ce_t``, ``lse_s``, and
  ``div`` (the divergence, unless forward KL) and the diagnostics when asked for (zeros where ``options.gated`` and
  the boolean scalar ``diagnose`` is false)."""
  terms, _ = _vocab_terms_fwd(
      options, student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, temp, diagnose
  )
  return terms


_vocab_terms.defvjp(_vocab_terms_fwd, _vocab_terms_bwd)


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
  tiling = tiles.make_tiling(
      seq, vocab, seq_chunk, vocab_chunk, student_logit_softcap, None if mixed else teacher_logit_softcap
  )
  param = divergences.lookup(divergence).check_param(divergence_param)
  if coverage_top_k is not None and coverage_top_k < 1:
    raise ValueError(f"coverage_top_k={coverage_top_k} must be positive or None")
  top_k = None if coverage_top_k is None else min(coverage_top_k, vocab)  # a k-cache with k >= V keeps all of it
  gated = diagnose is not None
  options = _Options(
      tiling,
      None if divergence == "forward_kl" else divergence,
      param,
      diagnostics,
      top_k,
      gated,
      tuple(float(w) for w in teacher_weights) if mixed else None,
      tuple(float(c) if c else None for c in teacher_logit_softcap) if mixed else None,
  )
  diagnose = jnp.asarray(True if diagnose is None else diagnose, bool)
  temperature = jnp.asarray(weights.temperature, jnp.float32)
  terms = _vocab_terms(
      options,
      student_hidden_BxSxD,
      student_unembed_DxV,
      jax.lax.stop_gradient(teacher_hidden_BxSxD),
      jax.lax.stop_gradient(teacher_unembed_DxV),
      labels_BxS.astype(jnp.int32),
      temperature,
      diagnose,
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
