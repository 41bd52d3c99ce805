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


"""One place picks the loss path from the types of the two heads (:mod:`heads`):

  ====================  =================================  ========================================================
  student               teacher                            loss
  ====================  =================================  ========================================================
  ``StudentLogits``     ``TeacherLogits``, a mixture of    ``objective.distillation_terms`` (dense)
                        them, or ``CachedTopK``
  ``StudentHidden``     ``TeacherHidden`` or a mixture     ``chunked_objective.distillation_terms_from_hidden``
                        of them                            (lean: tiles from hidden states)
  ``StudentHidden``     ``CachedTopK``                     ``chunked_sparse.offline_distillation_terms_from_hidden``
  ====================  =================================  ========================================================

Every path returns ``(objective_sum, count, metrics)`` with the same names and meaning. A :class:`heads.TeacherSet`
(several teachers scored apart) takes the path of its members once per member (:func:`_scored_apart`).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import chunked_objective
from maxtext_distill_plugin.loss import chunked_sparse
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import reductions


def _dense(student: heads.StudentLogits, teacher, labels, mask, weights, options: heads.LossOptions, common, diagnose):
  return objective.distillation_terms(
      student.logits_BxSxV, teacher, labels, mask, weights, top_k=options.top_k, diagnose=diagnose, **common
  )


def _lean_online(student: heads.StudentHidden, teacher, labels, mask, weights, options, common, diagnose):
  if isinstance(teacher, heads.TeacherMixture):
    members = {
        "teacher_hidden_BxSxD": tuple(m.hidden_BxSxD for m in teacher.members),
        "teacher_unembed_DxV": tuple(m.unembed_DxV for m in teacher.members),
        "teacher_logit_softcap": tuple(m.softcap for m in teacher.members),
        "teacher_weights": teacher.weights,
    }
  else:
    members = {
        "teacher_hidden_BxSxD": teacher.hidden_BxSxD,
        "teacher_unembed_DxV": teacher.unembed_DxV,
        "teacher_logit_softcap": teacher.softcap,
    }
  return chunked_objective.distillation_terms_from_hidden(
      student.hidden_BxSxD,
      student.unembed_DxV,
      labels_BxS=labels,
      mask_BxS=mask,
      weights=weights,
      teacher_features_LxBxSxD=teacher.features_LxBxSxD,
      student_logit_softcap=student.softcap,
      diagnostics=True,
      coverage_top_k=options.top_k,
      diagnose=diagnose,
      seq_chunk=options.seq_chunk,
      vocab_chunk=options.vocab_chunk,
      **members,
      **common,
  )


def _lean_cached(student: heads.StudentHidden, teacher, labels, mask, weights, options, common, diagnose):
  del diagnose  # offline the diagnostics come from the cache and the student's statistics: always computed
  return chunked_sparse.offline_distillation_terms_from_hidden(
      student.hidden_BxSxD,
      student.unembed_DxV,
      teacher,
      labels,
      mask,
      weights,
      student_logit_softcap=student.softcap,
      seq_chunk=options.seq_chunk,
      vocab_chunk=options.vocab_chunk,
      **common,
  )


def _hidden_members(teacher) -> bool:
  return all(isinstance(m, heads.TeacherHidden) for m in teacher.members)


# (student head, teacher head, a check on the teacher or None) -> the loss.
_PATHS = (
    (heads.StudentLogits, heads.TeacherLogits, None, _dense),
    (heads.StudentLogits, heads.CachedTopK, None, _dense),
    (heads.StudentLogits, heads.TeacherMixture, lambda t: not _hidden_members(t), _dense),
    (heads.StudentHidden, heads.TeacherHidden, None, _lean_online),
    (heads.StudentHidden, heads.TeacherMixture, _hidden_members, _lean_online),
    (heads.StudentHidden, heads.CachedTopK, None, _lean_cached),
)


def distillation_terms(
    student: heads.StudentHead,
    teacher: heads.TeacherHead,
    labels_BxS: jnp.ndarray,
    mask_BxS: jnp.ndarray,
    weights: objective.LossWeights,
    options: heads.LossOptions,
    *,
    student_features_LxBxSxD: jnp.ndarray | None = None,
    z_loss_multiplier: float = 0.0,
    diagnose: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, reductions.SumCount]]:
  """``(objective_sum, count, metrics)`` of one micro-batch on the path the two heads' types select (table above).

  ``diagnose``: online, a boolean scalar computes :data:`metric_names.ONLINE_DIAGNOSTICS` only where it is true
  (``(0, 0)`` pairs elsewhere); None computes them on every call.

  Raises:
    TypeError: for a pair of heads no path takes (e.g. full student logits against a hidden-state teacher).
  """
  common = {
      "student_features_LxBxSxD": student_features_LxBxSxD,
      "z_loss_multiplier": z_loss_multiplier,
      "feature_loss_type": options.feature_loss_type,
      "divergence": options.divergence,
      "divergence_param": options.divergence_param,
      "feature_layers": options.feature_layers,
  }
  if isinstance(teacher, heads.TeacherSet):
    return _scored_apart(
        lambda member, mask, rows: distillation_terms(
            rows(student),
            member,
            rows(labels_BxS),
            mask,
            weights,
            options,
            student_features_LxBxSxD=rows(student_features_LxBxSxD, axis=1),
            z_loss_multiplier=z_loss_multiplier,
            diagnose=diagnose,
        ),
        teacher,
        mask_BxS,
    )
  for student_type, teacher_type, accepts, loss in _PATHS:
    if isinstance(student, student_type) and isinstance(teacher, teacher_type) and (accepts is None or accepts(teacher)):
      return loss(student, teacher, labels_BxS, mask_BxS, weights, options, common, diagnose)
  raise TypeError(f"no loss path takes a {type(student).__name__} student and a {type(teacher).__name__} teacher")


def _block_rows(blocks: heads.RowBlocks, index: int, x, axis: int = 0):
  """Member ``index``'s rows of a student head or per-row array (None stays None)."""
  if x is None:
    return None
  if isinstance(x, heads.StudentLogits):
    return heads.StudentLogits(blocks.take(x.logits_BxSxV, index))
  if isinstance(x, heads.StudentHidden):
    return dataclasses.replace(x, hidden_BxSxD=blocks.take(x.hidden_BxSxD, index))
  return blocks.take(x, index, axis)


def _scored_apart(terms, teacher: heads.TeacherSet, mask_BxS):
  """Each member's ``terms(member, mask, rows)`` (``rows``: the member's rows of a per-row array), combined: with a
  route (row blocks), every token scored by its teacher alone (the tokens are split, so sums and counts
  add); without, ``sum_i w_i L_i`` over all tokens (the weights sum to 1, so the
  CE, feature and z-loss terms, shared by every member, keep their weight). Adds the per-teacher metrics."""
  total, count, metrics, per_teacher = 0.0, 0.0, {}, {}
  parts = []
  for index, member in enumerate(teacher.members):
    if teacher.blocks is not None:  # member ``index`` ran on its own rows only: score the student's same rows
      rows = functools.partial(_block_rows, teacher.blocks, index)
      parts.append(terms(member, rows(mask_BxS), rows))
      continue
    parts.append(terms(member, mask_BxS, lambda x, axis=0: x))
  all_tokens = reductions.masked_sum_count(jnp.ones(mask_BxS.shape, jnp.float32), mask_BxS)[1]
  for name, weight, (member_total, member_count, member_metrics) in zip(teacher.names, teacher.weights, parts):
    if teacher.blocks is None:
      total, count = total + weight * member_total, member_count
      metrics = {
          key: (metrics.get(key, (0.0, 0.0))[0] + weight * pair[0], pair[1]) for key, pair in member_metrics.items()
      }
    else:
      total, count = total + member_total, count + member_count
      metrics = reductions.add_pairs(metrics, member_metrics) if metrics else dict(member_metrics)
    found = {
        metric_names.TEACHER_SOFT_LOSS: member_metrics[metric_names.SOFT_LOSS],
        metric_names.TEACHER_TOKEN_FRACTION: (member_count, all_tokens),
    }
    if metric_names.TEACHER_LOSS in member_metrics:
      found[metric_names.TEACHER_NLL] = member_metrics[metric_names.TEACHER_LOSS]
    per_teacher.update({metric_names.per_teacher(name, key): pair for key, pair in found.items()})
  if teacher.blocks is None:
    metrics[metric_names.TOTAL_LOSS] = (total, count)
  metrics.update(per_teacher)
  return total, count, jax.tree.map(jax.lax.stop_gradient, metrics)
