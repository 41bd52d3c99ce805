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


"""What the two models hand the loss: typed heads, and the few static numbers the loss takes.

The student's head is its full logits (:class:`StudentLogits`) or its final hidden states with the unembedding
(:class:`StudentHidden`, the memory-lean path). The teacher's is its logits (:class:`TeacherLogits`), its hidden
states (:class:`TeacherHidden`), a cached top-k with its tail (:class:`CachedTopK`, offline), a per-token mixture of
several online teachers (:class:`TeacherMixture`) or several teachers scored apart (:class:`TeacherSet`).
:mod:`paths` picks the loss from the pair of types.
"""

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LossOptions:
  """The static numbers every loss path takes (no settings object enters ``loss/``).

  Attributes:
    divergence: the optimised divergence, a :data:`divergences.DIVERGENCES` name.
    divergence_param: its parameter (JSD's beta, the skew KLs' lambda), or None for the registry's default.
    feature_loss_type: ``"cosine"`` or ``"l2"``.
    feature_layers: the student's layer index of each feature row (per-layer metrics), or None.
    top_k: online: k of ``distill/topk_coverage`` (None: no such metric); offline the coverage is the cache's.
    seq_chunk: lean path: sequence positions per tile.
    vocab_chunk: lean path: vocabulary columns per tile (None: all of V).
  """

  divergence: str = "forward_kl"
  divergence_param: float | None = None
  feature_loss_type: str = "cosine"
  feature_layers: tuple[int, ...] | None = None
  top_k: int | None = None
  seq_chunk: int = 128
  vocab_chunk: int | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StudentLogits:
  """The student's full logits ``[B, S, V]``."""

  logits_BxSxV: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class StudentHidden:
  """The student's final hidden states ``[B, S, D]``, its unembedding ``[D, V]`` and soft cap (static)."""

  hidden_BxSxD: jnp.ndarray
  unembed_DxV: jnp.ndarray
  softcap: float | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TeacherLogits:
  """An online teacher's logits ``[B, S, V]``, the features of the chosen layers (or None) and its MoE load-balance
  loss (a metric, or None)."""

  logits_BxSxV: jnp.ndarray
  features_LxBxSxD: jnp.ndarray | None = None
  moe_lb_loss: jnp.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TeacherHidden:
  """An online teacher as the memory-lean loss needs it: hidden states, unembedding, soft cap (static), the features
  of the chosen layers (or None) and its MoE load-balance loss (a metric, or None)."""

  hidden_BxSxD: jnp.ndarray
  unembed_DxV: jnp.ndarray
  features_LxBxSxD: jnp.ndarray | None = None
  moe_lb_loss: jnp.ndarray | None = None
  softcap: float | None = None


@dataclasses.dataclass(frozen=True)
class CachedTopK:
  """The offline teacher: its top-k as read from a cache, with the mass outside it.

  Attributes:
    topk_ids_BxSxK: the teacher's top-k ids.
    topk_logprobs_BxSxK: their log-probabilities at T = 1.
    tail_logmass_BxS: log of the teacher mass outside the top-k.
    tail_renyi_BxSxR: Renyi entropies of that tail at ``sparse_losses.TAIL_RENYI_ORDERS`` (cache format 2), which
      make the tail bucket exact at T != 1; None assumes a uniform tail (exact at T = 1 only).
    tail: how the sparse KL treats that mass, ``"bucket"`` or ``"renormalize"`` (static).
    features_LxBxSxD: always None (a cache stores no features); read like the online teachers'.
    moe_lb_loss: always None.
  """

  topk_ids_BxSxK: jnp.ndarray
  topk_logprobs_BxSxK: jnp.ndarray
  tail_logmass_BxS: jnp.ndarray
  tail_renyi_BxSxR: jnp.ndarray | None = None
  tail: str = "bucket"
  features_LxBxSxD: jnp.ndarray | None = None
  moe_lb_loss: jnp.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TeacherMixture:
  """Several online teachers scored as one: per token, ``p = sum_i w_i p_i`` at each temperature.

  ``members`` are all :class:`TeacherLogits` (the dense path) or all :class:`TeacherHidden` (the lean path);
  ``weights`` (static) are positive and sum to 1.
  """

  members: tuple
  weights: tuple[float, ...]
  features_LxBxSxD: jnp.ndarray | None = None
  moe_lb_loss: jnp.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class RowBlocks:
  """Static row blocks of a routed batch: every group of ``sum(rows)`` consecutive rows (one device's rows, see
  :mod:`training.sources.routed`) holds ``rows[i]`` rows of teacher ``i``, in order. :meth:`take` is a reshape and a
  slice, local to each data-parallel shard."""

  rows: tuple[int, ...]

  def take(self, x: jnp.ndarray, index: int, axis: int = 0) -> jnp.ndarray:
    """The rows of teacher ``index`` along ``axis`` of ``x``."""
    per_group, start = sum(self.rows), sum(self.rows[:index])
    groups = x.shape[axis] // per_group
    grouped = x.reshape(x.shape[:axis] + (groups, per_group) + x.shape[axis + 1 :])
    block = jax.lax.slice_in_dim(grouped, start, start + self.rows[index], axis=axis + 1)
    return block.reshape(x.shape[:axis] + (groups * self.rows[index],) + x.shape[axis + 1 :])


@dataclasses.dataclass(frozen=True)
class TeacherSet:
  """Several teachers scored apart: each member's loss on its own, then weighted (``blocks`` None) or, routed,
  each row scored by its own member only.

  Attributes:
    members: one head per teacher (any single-teacher head, all of one kind).
    names: the teachers' names (static), for the per-teacher metrics.
    weights: each member's weight in the loss (static; positive, summing to 1); unused with a route.
    blocks: the route, by static row blocks (static), or None (the weighted sum): member ``i`` holds only the rows
      ``blocks.take(x, i)`` of the batch, and is scored against the student's same rows.
  """

  members: tuple
  names: tuple[str, ...]
  weights: tuple[float, ...]
  features_LxBxSxD: jnp.ndarray | None = None
  moe_lb_loss: jnp.ndarray | None = None
  blocks: RowBlocks | None = None


jax.tree_util.register_dataclass(
    TeacherSet,
    data_fields=["members", "features_LxBxSxD", "moe_lb_loss"],
    meta_fields=["names", "weights", "blocks"],
)
jax.tree_util.register_dataclass(StudentHidden, data_fields=["hidden_BxSxD", "unembed_DxV"], meta_fields=["softcap"])
jax.tree_util.register_dataclass(
    TeacherHidden,
    data_fields=["hidden_BxSxD", "unembed_DxV", "features_LxBxSxD", "moe_lb_loss"],
    meta_fields=["softcap"],
)
jax.tree_util.register_dataclass(
    CachedTopK,
    data_fields=[
        "topk_ids_BxSxK",
        "topk_logprobs_BxSxK",
        "tail_logmass_BxS",
        "tail_renyi_BxSxR",
        "features_LxBxSxD",
        "moe_lb_loss",
    ],
    meta_fields=["tail"],
)
jax.tree_util.register_dataclass(
    TeacherMixture, data_fields=["members", "features_LxBxSxD", "moe_lb_loss"], meta_fields=["weights"]
)

StudentHead = StudentLogits | StudentHidden
TeacherHead = TeacherLogits | TeacherHidden | CachedTopK | TeacherMixture | TeacherSet
