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


"""The per-token mixture of several teachers' distributions: ``log p = log sum_i w_i p_i``, at each temperature.

Mixing distributions (not logits) keeps every teacher's confidence: where one teacher is sure and another is not, the
mixture puts its mass on the union of their likely tokens. At temperature T each teacher is softened first,
``p_i,T = softmax(z_i / T)``, then mixed, so the mixture at T = 1 and at T are two different distributions.

On the dense path the members' full log-probabilities are mixed (:func:`dense_log_probs`); on the lean path
:class:`MixedTeachers` mixes them tile by tile, from each member's log-sum-exps found in one sweep of its own.
"""

import dataclasses

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import losses
from maxtext_distill_plugin.loss import tiles


def mix(log_probs_KxBxSxV, weights) -> jnp.ndarray:
  """``log sum_i w_i exp(log_probs_i)`` over the leading axis, ``[B, S, V]``; ``weights`` a static tuple."""
  log_weights = jnp.log(jnp.asarray(weights, jnp.float32)).reshape((-1,) + (1,) * (log_probs_KxBxSxV.ndim - 1))
  return jax.nn.logsumexp(log_probs_KxBxSxV + log_weights, axis=0)


def dense_log_probs(mixture, temperature) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The mixture's log-probabilities at T and (gradient-stopped) at 1 from its members' logits ``[B, S, V]``."""
  logits = [member.logits_BxSxV for member in mixture.members]
  at_T = mix(jnp.stack([losses.log_softmax_at(z, temperature) for z in logits]), mixture.weights)
  at_1 = mix(jnp.stack([losses.log_softmax_at(z, 1.0) for z in logits]), mixture.weights)
  return at_T, jax.lax.stop_gradient(at_1)


@dataclasses.dataclass(frozen=True)
class MixedTeachers:
  """The mixture's tile logits on the lean path (:mod:`online_tiles`): static weights and each member's soft cap.

  The hidden states and unembeddings come as tuples of one entry per member (widths may differ).
  """

  weights: tuple[float, ...]
  softcaps: tuple[float | None, ...]

  def lses(self, temperature, teacher_tiles, hidden_BxCxD, tiling: tiles.Tiling):
    """Each member's ``(lse at 1, lse at T)`` ``[B, C, 1]`` over the vocabulary: one sweep over its tiles."""
    shape = hidden_BxCxD[0].shape[:2]

    def body(carry, tile):
      wt_tiles, offset = tile
      valid = offset + jnp.arange(wt_tiles[0].shape[-1]) < tiling.vocab_size
      new = []
      for (at_1, at_T), h, w, cap in zip(carry, hidden_BxCxD, wt_tiles, self.softcaps):
        z = jnp.where(valid, tiles.tile_logits(h, w, offset, cap)[0], tiles.PADDED_LOGIT)
        new.append((tiles.online_update(at_1, z), tiles.online_update(at_T, z / temperature)))
      return tuple(new), None

    offsets = jnp.arange(teacher_tiles[0].shape[0]) * tiling.vocab_chunk
    init = tuple((tiles.empty_online_state(shape), tiles.empty_online_state(shape)) for _ in hidden_BxCxD)
    found, _ = jax.lax.scan(body, init, (teacher_tiles, offsets))
    return tuple((tiles.online_lse(a)[..., None], tiles.online_lse(b)[..., None]) for a, b in found)

  def tile(self, hidden_BxCxD, unembed_DxK, offset, valid, temperature, lses):
    """``(zt1, ztT)`` of one tile: the mixture's normalised log-probabilities at 1, and T times those at T (so that
    ``softmax(ztT / T)`` is the mixture at T); padded columns masked."""
    member_logits = [
        tiles.tile_logits(h, w, offset, cap)[0] for h, w, cap in zip(hidden_BxCxD, unembed_DxK, self.softcaps)
    ]
    at_1 = mix(jnp.stack([z - lse_1 for z, (lse_1, _) in zip(member_logits, lses)]), self.weights)
    at_T = mix(jnp.stack([z / temperature - lse_T for z, (_, lse_T) in zip(member_logits, lses)]), self.weights)
    return jnp.where(valid, at_1, tiles.PADDED_LOGIT), jnp.where(valid, temperature * at_T, tiles.PADDED_LOGIT)
