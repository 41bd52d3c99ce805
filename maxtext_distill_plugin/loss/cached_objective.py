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

"""The offline loss per token: the student's head statistics against a cached top-k teacher.

:func:`cached_teacher_terms` is the one formula of the offline loss; its student statistics
(:class:`StudentHeadStats`) come from full logits (:func:`student_head_stats`, the dense path) or
tile by tile from hidden states (:mod:`chunked_sparse`, the lean path), so both paths give the same
values, gradients and metrics.
"""

import typing

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import divergences
from maxtext_distill_plugin.loss import losses
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import sparse_losses


class StudentHeadStats(typing.NamedTuple):
  """What the loss needs from the student's logits ``z`` against a cached top-k teacher (all float32).

  :func:`student_head_stats` takes them from full logits; :mod:`chunked_sparse` computes them tile by tile.

  Attributes:
    lse_BxS: ``logsumexp(z)`` over the vocabulary.
    lse_at_T_BxS: ``logsumexp(z / T)`` over the vocabulary.
    logit_at_label_BxS: ``z[label]``.
    logits_at_ids_BxSxK: ``z`` at the teacher's top-k ids.
    max_logit_BxS: ``max_v z_v`` (a diagnostic: top-1 agreement; no gradient).
    entropy_BxS: the student's entropy at T = 1, ``lse - sum_v q_v z_v`` (a diagnostic; no gradient).
  """

  lse_BxS: jnp.ndarray
  lse_at_T_BxS: jnp.ndarray
  logit_at_label_BxS: jnp.ndarray
  logits_at_ids_BxSxK: jnp.ndarray
  max_logit_BxS: jnp.ndarray
  entropy_BxS: jnp.ndarray


def student_head_stats(student_logits_BxSxV, ids_BxSxK, labels_BxS, temperature) -> StudentHeadStats:
  """:class:`StudentHeadStats` of full ``[B, S, V]`` logits."""
  logits = student_logits_BxSxV.astype(jnp.float32)
  at_label = jnp.take_along_axis(logits, labels_BxS[..., None].astype(jnp.int32), axis=-1)[..., 0]
  at_ids, lse_at_T = sparse_losses.gather_student(logits, ids_BxSxK, temperature)
  lse = jax.nn.logsumexp(logits, axis=-1)
  frozen = jax.lax.stop_gradient(logits)
  # The same formula as the tiled statistics (chunked_sparse), so both paths report the same entropy.
  probs = jnp.exp(frozen - jax.lax.stop_gradient(lse)[..., None])
  mean_logit = jnp.sum(jnp.where(probs > 0, probs * frozen, 0.0), axis=-1)
  entropy = jax.lax.stop_gradient(lse) - mean_logit
  return StudentHeadStats(lse, lse_at_T, at_label, at_ids, jnp.max(frozen, axis=-1), entropy)


def cached_teacher_terms(
    student: StudentHeadStats,
    teacher,
    temperature,
    vocab_size: int,
    *,
    divergence: str = "forward_kl",
    divergence_param: float | None = None,
):
  """Per-token ``(divergence_at_T, kl_at_T, kl_at_1, student_ce, extra)`` against a cached top-k teacher
  (a :class:`heads.CachedTopK`).

  The one formula of the offline loss, whether the stats come from full logits or from tiles. The divergence
  is the registry's over the k+1 buckets (``tail="bucket"``) or the k renormalised ids (``"renormalize"``); see
  :mod:`sparse_losses` for what is exact. ``extra`` holds the diagnostics: top-k coverage (from the cache),
  top-1 agreement (student argmax = the teacher's top-1 id), the teacher's entropy at T = 1 *of its k+1
  buckets* (the tail's inner entropy is not stored, so this is ``H(p) - P_tail H(tail)``, a lower bound, exact
  at k = V) and the student's exact entropy at T = 1.
  """
  cached = (teacher.topk_logprobs_BxSxK, teacher.tail_logmass_BxS)
  options = {"tail": teacher.tail, "vocab_size": vocab_size, "teacher_tail_renyi_BxSxR": teacher.tail_renyi_BxSxR}
  at_ids = student.logits_at_ids_BxSxK
  kl_at_T = sparse_losses.sparse_kl_from_gathered(
      at_ids, student.lse_at_T_BxS, *cached, temperature=temperature, **options
  )
  if divergence == "forward_kl":
    divergence_at_T = kl_at_T
  else:
    buckets = sparse_losses.bucket_log_probs(at_ids, student.lse_at_T_BxS, *cached, temperature=temperature, **options)
    divergence_at_T = divergences.lookup(divergence)(*buckets, param=divergence_param)
  kl_at_1 = sparse_losses.sparse_kl_from_gathered(at_ids, student.lse_BxS, *cached, temperature=1.0, **options)
  student_ce = student.lse_BxS - student.logit_at_label_BxS
  # Offline there is no teacher CE to report honestly (labels outside the top-k have no stored probability).
  top1 = jnp.argmax(teacher.topk_logprobs_BxSxK, axis=-1)[..., None]
  at_top1 = jnp.take_along_axis(at_ids, top1, axis=-1)[..., 0]
  extra = {
      metric_names.TOPK_COVERAGE: sparse_losses.topk_coverage(teacher.tail_logmass_BxS),
      metric_names.TOP1_AGREEMENT: (at_top1 >= student.max_logit_BxS).astype(jnp.float32),
      metric_names.TEACHER_ENTROPY: losses.entropy_from_log_probs(
          sparse_losses.teacher_buckets_at_1(*cached, vocab_size=vocab_size)
      ),
      metric_names.STUDENT_ENTROPY: student.entropy_BxS,
  }
  return divergence_at_T, kl_at_T, kl_at_1, student_ce, jax.lax.stop_gradient(extra)
