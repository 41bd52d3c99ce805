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

"""The per-tile math of the online lean loss (:mod:`chunked_objective`), plugged into :mod:`tile_vjp`.

With ``z_s`` the student's capped logits of a tile and ``z_t`` the teacher's (one teacher: :class:`OneTeacher`; a
per-token mixture: :class:`teacher_mixture.MixedTeachers`, which gives its log-probabilities at 1 and T times those
at T), per token and per distribution q in {s/1, s/T, t/1, t/T}:

  Sweep 1, online over vocabulary tiles: m_q = running max, l_q = sum exp(z_q - m_q), lse_q = m_q + log l_q,
    a_T = sum exp(z_t/T - m_tT) (z_t - z_s) / T,   a_1 = sum exp(z_t - m_t1) (z_t - z_s).
  KL(t_T || s_T) = a_T / l_tT - lse_tT + lse_sT,   KL at T=1 likewise,
  CE(student) = lse_s1 - z_s[label],   CE(teacher) = lse_t1 - z_t[label],   and lse_s1 (MaxText's z-loss).
  Sweep 2 (any divergence but forward KL, which sweep 1 gives): with log p_v = z_t,v / T - lse_tT and
  log q_v = z_s,v / T - lse_sT, the registry's elementwise form e_v (:mod:`divergences`) and its diagonal partial
  g_v = de_v / dlog q_v:  D = max(sum_v e_v, 0) (clamped straight-through, as the dense path),  G = sum_v g_v.

The residuals are four ``[B, S]`` log-sum-exps (and G, and a mixture's member log-sum-exps); per tile the backward is

  dL/dz_s = c_klT / T (p_sT - p_tT) + c_kl1 (p_s1 - p_t1) + c_ce (p_s1 - onehot(label)) + c_lse p_s1
            + c_D (g - q_T G) / T.

Diagnostics (gradient-free) come out of sweep 1: top-1 agreement (running max and first argmax per model), entropies
at T = 1, ``H = lse_1 - sum exp(z - m) z / l``, and the teacher's mass in its top-k at T = 1 (a running top-k).
"""

import dataclasses

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import divergences
from maxtext_distill_plugin.loss import teacher_mixture
from maxtext_distill_plugin.loss import tile_vjp
from maxtext_distill_plugin.loss import tiles

# Per-token outputs that carry no gradient (the teacher's CE and the diagnostics).
GRADIENT_FREE = ("ce_t", "top1", "entropy_t", "entropy_s", "coverage")


@dataclasses.dataclass(frozen=True)
class OneTeacher:
  """One online teacher's tile logits ``cap(h_t @ W_t)``, padded columns masked: the same array at 1 and at T."""

  softcap: float | None = None

  def lses(self, temperature, teacher_tiles, hidden_BxCxD, tiling: tiles.Tiling):  # pylint: disable=unused-argument
    """Nothing to find before the sweeps."""
    return ()

  def tile(self, hidden_BxCxD, unembed_DxK, offset, valid, temperature, lses):  # pylint: disable=unused-argument
    """``(zt1, ztT)``: ``softmax(zt1)`` is the teacher at 1, ``softmax(ztT / T)`` at T."""
    zt, _ = tiles.tile_logits(hidden_BxCxD, unembed_DxK, offset, self.softcap)
    zt = jnp.where(valid, zt, tiles.PADDED_LOGIT)
    return zt, zt


@dataclasses.dataclass(frozen=True)
class OnlineKernel:
  """The online lean loss's :class:`tile_vjp.TileKernel` (hashable: the VJP's static argument).

  Row inputs ``(teacher hidden, labels)``, column inputs the teacher's unembedding (tuples of either for a mixture),
  scalars ``(temperature, diagnose)``. ``divergence`` None is forward KL, which sweep 1 alone gives (the fast path);
  ``top_k`` None: no coverage.
  """

  tiling: tiles.Tiling
  teacher: OneTeacher | teacher_mixture.MixedTeachers
  divergence: str | None = None
  param: float | None = None
  diagnostics: bool = False
  top_k: int | None = None
  gated: bool = False  # the diagnostics are computed only where the traced flag ``diagnose`` is true

  def _tile_logits(self, hs_BxCxD, ht_BxCxD, ws_DxK, wt_DxK, offset, temperature, members):
    """Capped and masked student logits, the teacher's ``(zt1, ztT)``, the column ids and their validity."""
    zs_capped, columns = tiles.tile_logits(hs_BxCxD, ws_DxK, offset, self.tiling.student_softcap)
    return (zs_capped,) + self._teacher_tile(zs_capped, columns, ht_BxCxD, wt_DxK, offset, temperature, members)

  def _teacher_tile(self, zs_capped, columns, ht_BxCxD, wt_DxK, offset, temperature, members):
    valid = columns < self.tiling.vocab_size
    zs = jnp.where(valid, zs_capped, tiles.PADDED_LOGIT)
    zt, zt_T = self.teacher.tile(ht_BxCxD, wt_DxK, offset, valid, temperature, members)
    return zs, zt, zt_T, columns, valid

  def _partials(self, zs, zt_T, lse_st, lse_tt, temperature, valid):
    """``(e_v, g_v)`` of the chosen divergence on one tile, 0 on padded columns; lses are ``[B, C, 1]``."""
    elementwise = divergences.lookup(self.divergence).elementwise
    teacher_logp, student_logp = zt_T / temperature - lse_tt, zs / temperature - lse_st
    e, g = divergences.student_partials(elementwise, teacher_logp, student_logp, param=self.param)
    return jnp.where(valid, e, 0.0), jnp.where(valid, g, 0.0)

  def forward_row(self, scalars, student_tiles, teacher_tiles, hs_BxCxD, row_inputs):
    """Per-token terms (a dict of ``[B, C]``) and residuals of one sequence tile (sweeps 1 and 2)."""
    temperature, _ = scalars
    ht_BxCxD, labels_BxC = row_inputs
    shape = labels_BxC.shape
    empty = tiles.empty_online_state(shape)
    zeros = jnp.zeros(shape, jnp.float32)
    diagnostics = self.diagnostics
    members = self.teacher.lses(temperature, teacher_tiles, ht_BxCxD, self.tiling)

    def body(carry, tile):
      ws_DxK, wt_DxK, offset = tile
      _, zs, zt, zt_T, columns, _ = self._tile_logits(hs_BxCxD, ht_BxCxD, ws_DxK, wt_DxK, offset, temperature, members)
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
      if self.top_k:
        new["top_t"] = tiles.running_top_k(carry["top_t"], zt)
      return new, None

    init = {"s1": empty, "st": empty, "t1": empty, "tt": empty, "label_s": zeros, "label_t": zeros}
    if diagnostics:
      init["t1"] = (empty[0], empty[1], (zeros, zeros))
      init["argmax_s"] = init["argmax_t"] = jnp.zeros(shape, jnp.int32)
    if self.top_k:
      init["top_t"] = jnp.full(shape + (self.top_k,), -jnp.inf, jnp.float32)
    out, _ = tile_vjp.over_vocab(body, init, student_tiles, teacher_tiles, self.tiling.vocab_chunk)
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
    if self.top_k:
      terms["coverage"] = jnp.sum(jnp.exp(out["top_t"] - lse_t1[..., None]), axis=-1)
    sum_g = ()
    if self.divergence is not None:
      terms["div"], sum_g = self._divergence_row(
          temperature, student_tiles, teacher_tiles, hs_BxCxD, ht_BxCxD, lse_st, lse_tt, members
      )
    return terms, (lse_s1, lse_st, lse_t1, lse_tt, sum_g, members)

  def _divergence_row(self, temperature, student_tiles, teacher_tiles, hs_BxCxD, ht_BxCxD, lse_st, lse_tt, members):
    """Sweep 2 of one sequence tile: ``(D, G)``, each ``[B, C]``: the clamped ``sum_v e_v`` and ``sum_v g_v``."""
    lse_st, lse_tt = lse_st[..., None], lse_tt[..., None]

    def body(carry, tile):
      ws_DxK, wt_DxK, offset = tile
      _, zs, _, zt_T, _, valid = self._tile_logits(hs_BxCxD, ht_BxCxD, ws_DxK, wt_DxK, offset, temperature, members)
      e, g = self._partials(zs, zt_T, lse_st, lse_tt, temperature, valid)
      return (carry[0] + jnp.sum(e, axis=-1), carry[1] + jnp.sum(g, axis=-1)), None

    zeros = jnp.zeros(lse_st.shape[:-1], jnp.float32)
    (sum_e, sum_g), _ = tile_vjp.over_vocab(body, (zeros, zeros), student_tiles, teacher_tiles, self.tiling.vocab_chunk)
    # The dense path's clamp at 0: rounding never makes the value negative; the backward ignores it (straight-through).
    return jnp.where(sum_e < 0.0, 0.0, sum_e), sum_g

  def sweep(self, run, scalars):
    """All sequence tiles; gated, the diagnostics' sweep runs only where ``diagnose`` is true (zeros elsewhere)."""
    _, diagnose = scalars
    if not (self.gated and (self.diagnostics or self.top_k)):
      return run(self)
    plain = dataclasses.replace(self, diagnostics=False, top_k=None)

    def without_diagnostics():
      terms, lses = run(plain)
      names = (("top1", "entropy_t", "entropy_s") if self.diagnostics else ()) + (("coverage",) * bool(self.top_k))
      return {**terms, **{name: jnp.zeros_like(terms["ce_t"]) for name in names}}, lses

    # Only the sweep differs: the diagnostics' extra passes over each tile (a running top-k among them) run on
    # the steps that ask for them; the backward never reads them.
    return jax.lax.cond(diagnose, lambda: run(self), without_diagnostics)

  def differentiable(self, cotangents):
    """The teacher's CE and the diagnostics depend on no student parameter through a gradient: cotangents dropped."""
    return {name: c for name, c in cotangents.items() if name not in GRADIENT_FREE}

  def logit_cotangent(self, scalars, row_inputs, residuals, cotangents):
    """``dL/dz_s`` of each tile of one sequence tile (the formula in the module docstring)."""
    temperature, _ = scalars
    ht_BxCxD, labels_BxC = row_inputs
    lse_s1, lse_st, lse_t1, lse_tt = (lse[..., None] for lse in residuals[:4])
    sum_g, members = residuals[4:]
    cot_kl_t, cot_kl_1, cot_ce, cot_lse = (cotangents[name][..., None] for name in ("kl_t", "kl_1", "ce_s", "lse_s"))

    def tile_cotangent(zs_capped, columns, wt_DxK, offset):
      tile = self._teacher_tile(zs_capped, columns, ht_BxCxD, wt_DxK, offset, temperature, members)
      zs, zt, zt_T, columns, valid = tile
      p_s1, p_st = jnp.exp(zs - lse_s1), jnp.exp(zs / temperature - lse_st)
      p_t1, p_tt = jnp.exp(zt - lse_t1), jnp.exp(zt_T / temperature - lse_tt)
      onehot = (columns == labels_BxC[..., None]).astype(jnp.float32)
      d_logits = cot_kl_t / temperature * (p_st - p_tt) + cot_kl_1 * (p_s1 - p_t1) + cot_ce * (p_s1 - onehot)
      d_logits = d_logits + cot_lse * p_s1
      if self.divergence is not None:
        # dD/dz_v = (g_v - q_v sum_u g_u) / T through log q = z / T - lse(z / T); G = sum_u g_u from the forward.
        _, g = self._partials(zs, zt_T, lse_st, lse_tt, temperature, valid)
        d_logits = d_logits + cotangents["div"][..., None] / temperature * (g - p_st * sum_g[..., None])
      return d_logits

    return tile_cotangent
