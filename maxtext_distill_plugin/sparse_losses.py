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

"""Per-token KL against a sparse (top-k) teacher: pure, jit-able, no reduction.

The teacher is known only through its top-k ids, their log-probabilities at T=1
and the log of the remaining mass (the tail), as stored by the offline cache.
The student enters only through two gathered quantities, so the same formula
serves full ``[B, S, V]`` logits (:func:`sparse_kl_divergence`) and the
memory-lean loss, which computes them tile by tile (:mod:`chunked_sparse`):

  z_ids = z[ids] ``[B, S, k]`` and lse_T = logsumexp(z / T) over all V ``[B, S]``.

Two ways to compare the two distributions (:func:`sparse_kl_from_gathered`):

``tail="bucket"`` (default): k+1 outcomes, the k ids and one bucket for all other
tokens. At T=1 the teacher's buckets are exact. At T != 1 each id is re-tempered,
``p_i(T) ∝ p_i^(1/T)``, and the tail is *assumed spread uniformly* over its V-k
tokens, so its tempered weight is ``(V-k) * (tail/(V-k))^(1/T)``; for T > 1 this
over-estimates the true tempered tail mass (Jensen), for T < 1 it under-estimates
it. The student's buckets are exact at any T: ``log q_ids = z_ids / T - lse_T``
and its own mass outside the ids, ``log(1 - sum exp(log q_ids))`` (no
``[B, S, k, V]`` one-hot, no scatter). In float32 that tail is resolved down to
about ``1e-7`` of the mass; below that it is floored at ``2^-23``.

``tail="renormalize"``: both distributions renormalised over the k ids (upstream
MaxText's offline loss); the only choice when the tail is unknown (caches
converted from upstream). It needs no ``lse_T``.

With k = V the tail is empty and both modes equal the dense KL of
:func:`maxtext_distill_plugin.losses.kl_divergence` at any T.
"""

import jax
import jax.numpy as jnp

TAIL_MODES = ("bucket", "renormalize")
_TAIL_FLOOR = 2.0**-23


def check_teacher(batch_shape, ids_BxSxK, logprobs_BxSxK, tail_logmass_BxS, tail: str, vocab_size: int) -> None:
  """Raises ValueError unless the cached teacher's arrays fit a student of ``[B, S] = batch_shape`` and V."""
  if tail not in TAIL_MODES:
    raise ValueError(f"tail={tail!r} is unknown. Fix: use one of {TAIL_MODES}.")
  if ids_BxSxK.shape[:-1] != batch_shape or logprobs_BxSxK.shape != ids_BxSxK.shape:
    raise ValueError(
        f"student [B, S] = {batch_shape}, teacher ids {ids_BxSxK.shape} and log-probs"
        f" {logprobs_BxSxK.shape} must share [B, S] (and k)"
    )
  if tail_logmass_BxS.shape != batch_shape:
    raise ValueError(f"teacher tail log-mass {tail_logmass_BxS.shape} must be [B, S] = {batch_shape}")
  if ids_BxSxK.shape[-1] > vocab_size:
    raise ValueError(f"k={ids_BxSxK.shape[-1]} exceeds the student's vocabulary {vocab_size}")


def gather_student(student_logits_BxSxV: jnp.ndarray, ids_BxSxK: jnp.ndarray, temperature):
  """What the sparse KL needs from full logits: ``(z_ids [B, S, k], lse_T [B, S])``, float32."""
  logits = student_logits_BxSxV.astype(jnp.float32)
  at_ids = jnp.take_along_axis(logits, ids_BxSxK.astype(jnp.int32), axis=-1)
  return at_ids, jax.nn.logsumexp(logits / temperature, axis=-1)


def student_bucket_log_probs(student_logits_BxSxV: jnp.ndarray, ids_BxSxK: jnp.ndarray, temperature):
  """Student ``log q(T)`` at the ids ``[B, S, k]`` and of its mass outside them ``[B, S]`` (float32).

  Args:
    student_logits_BxSxV: ``[B, S, V]`` logits (any float dtype).
    ids_BxSxK: ``[B, S, k]`` distinct vocabulary ids per token.
    temperature: positive scalar T.

  Returns:
    ``(log_q_ids_BxSxK, log_q_tail_BxS)``; the tail is ``-inf``-free (floored at ``2^-23``).
  """
  return student_bucket_log_probs_from_gathered(
      *gather_student(student_logits_BxSxV, ids_BxSxK, temperature), temperature
  )


def student_bucket_log_probs_from_gathered(student_logits_at_ids_BxSxK, student_lse_at_T_BxS, temperature):
  """:func:`student_bucket_log_probs` from ``z_ids`` and ``lse_T = logsumexp(z / T)`` over the whole vocabulary."""
  log_q_ids = student_logits_at_ids_BxSxK.astype(jnp.float32) / temperature - student_lse_at_T_BxS[..., None]
  captured = jnp.sum(jnp.exp(log_q_ids), axis=-1)
  return log_q_ids, jnp.log(jnp.maximum(1.0 - captured, _TAIL_FLOOR))


def teacher_bucket_log_probs(logprobs_BxSxK: jnp.ndarray, tail_logmass_BxS: jnp.ndarray, temperature, vocab_size: int):
  """Teacher ``log p(T)`` over the k ids ``[B, S, k]`` and the tail bucket ``[B, S]`` (uniform-tail tempering).

  Args:
    logprobs_BxSxK: ``[B, S, k]`` teacher log-probabilities at T=1.
    tail_logmass_BxS: ``[B, S]`` log of the teacher's mass outside the k ids (``-inf`` if none).
    temperature: positive scalar T.
    vocab_size: V.

  Returns:
    ``(log_p_ids_BxSxK, log_p_tail_BxS)``, normalised over the k+1 buckets.
  """
  k = logprobs_BxSxK.shape[-1]
  weights = logprobs_BxSxK.astype(jnp.float32) / temperature
  if k == vocab_size:
    return weights - jax.nn.logsumexp(weights, axis=-1, keepdims=True), jnp.full(weights.shape[:-1], -jnp.inf)
  log_tail_size = jnp.log(jnp.float32(vocab_size - k))
  tail_weight = tail_logmass_BxS.astype(jnp.float32) / temperature + (1.0 - 1.0 / temperature) * log_tail_size
  norm = jnp.logaddexp(jax.nn.logsumexp(weights, axis=-1), tail_weight)
  return weights - norm[..., None], tail_weight - norm


def _kl_terms(log_p: jnp.ndarray, log_q: jnp.ndarray) -> jnp.ndarray:
  p = jnp.exp(log_p)
  return jnp.where(p > 0, p * (jnp.where(p > 0, log_p, 0.0) - log_q), 0.0)


def sparse_kl_from_gathered(
    student_logits_at_ids_BxSxK: jnp.ndarray,
    student_lse_at_T_BxS: jnp.ndarray | None,
    teacher_topk_logprobs_BxSxK: jnp.ndarray,
    teacher_tail_logmass_BxS: jnp.ndarray,
    *,
    temperature,
    tail: str,
    vocab_size: int,
) -> jnp.ndarray:
  """``KL(teacher_T || student_T)`` per token from the student's logits at the teacher's ids, without T^2.

  Args:
    student_logits_at_ids_BxSxK: ``[B, S, k]`` student logits ``z`` at the teacher's top-k ids (any float dtype).
    student_lse_at_T_BxS: ``[B, S]`` ``logsumexp(z / T)`` over the student's whole vocabulary; unused (may be
      None) with ``tail="renormalize"``.
    teacher_topk_logprobs_BxSxK: ``[B, S, k]`` teacher log-probabilities at T=1 of those ids.
    teacher_tail_logmass_BxS: ``[B, S]`` log of the teacher mass outside them (unused by ``renormalize``).
    temperature: positive scalar T (may be traced); the same T as ``student_lse_at_T_BxS``.
    tail: ``"bucket"`` (k+1 outcomes) or ``"renormalize"`` (k outcomes); see the module docstring.
    vocab_size: V, the student's vocabulary (k = V means there is no tail).

  Returns:
    ``[B, S]`` float32 KL in nats.
  """
  if tail not in TAIL_MODES:
    raise ValueError(f"tail={tail!r} is unknown. Fix: use one of {TAIL_MODES}.")
  k = student_logits_at_ids_BxSxK.shape[-1]
  if tail == "renormalize":
    teacher = jax.nn.log_softmax(teacher_topk_logprobs_BxSxK.astype(jnp.float32) / temperature, axis=-1)
    student = jax.nn.log_softmax(student_logits_at_ids_BxSxK.astype(jnp.float32) / temperature, axis=-1)
    return jnp.sum(_kl_terms(teacher, student), axis=-1)
  log_q_ids, log_q_tail = student_bucket_log_probs_from_gathered(
      student_logits_at_ids_BxSxK, student_lse_at_T_BxS, temperature
  )
  log_p_ids, log_p_tail = teacher_bucket_log_probs(
      teacher_topk_logprobs_BxSxK, teacher_tail_logmass_BxS, temperature, vocab_size
  )
  kl = jnp.sum(_kl_terms(log_p_ids, log_q_ids), axis=-1)
  if k < vocab_size:
    kl = kl + _kl_terms(log_p_tail, log_q_tail)
  return kl


def sparse_kl_divergence(
    student_logits_BxSxV: jnp.ndarray,
    teacher_topk_ids_BxSxK: jnp.ndarray,
    teacher_topk_logprobs_BxSxK: jnp.ndarray,
    teacher_tail_logmass_BxS: jnp.ndarray,
    *,
    temperature=1.0,
    tail: str = "bucket",
) -> jnp.ndarray:
  """``KL(teacher_T || student_T)`` per token over the teacher's top-k (plus a tail bucket), without T^2.

  Args:
    student_logits_BxSxV: ``[B, S, V]`` student logits.
    teacher_topk_ids_BxSxK: ``[B, S, k]`` teacher top-k ids (any order, distinct).
    teacher_topk_logprobs_BxSxK: ``[B, S, k]`` teacher log-probabilities at T=1 of those ids.
    teacher_tail_logmass_BxS: ``[B, S]`` log of the teacher mass outside them (unused by ``renormalize``).
    temperature: positive scalar T (may be traced).
    tail: ``"bucket"`` (k+1 outcomes) or ``"renormalize"`` (k outcomes); see the module docstring.

  Returns:
    ``[B, S]`` float32 KL in nats; mask and reduce with :mod:`maxtext_distill_plugin.reductions`.
  """
  *batch_shape, vocab_size = student_logits_BxSxV.shape
  check_teacher(
      tuple(batch_shape), teacher_topk_ids_BxSxK, teacher_topk_logprobs_BxSxK, teacher_tail_logmass_BxS, tail, vocab_size
  )
  at_ids, lse_at_T = gather_student(student_logits_BxSxV, teacher_topk_ids_BxSxK, temperature)
  return sparse_kl_from_gathered(
      at_ids,
      lse_at_T,
      teacher_topk_logprobs_BxSxK,
      teacher_tail_logmass_BxS,
      temperature=temperature,
      tail=tail,
      vocab_size=vocab_size,
  )


def topk_coverage(teacher_tail_logmass_BxS: jnp.ndarray) -> jnp.ndarray:
  """Teacher mass captured by its top-k, ``1 - exp(tail)``, per token ``[B, S]``."""
  return -jnp.expm1(teacher_tail_logmass_BxS.astype(jnp.float32))


def teacher_label_log_prob(
    teacher_topk_ids_BxSxK: jnp.ndarray,
    teacher_topk_logprobs_BxSxK: jnp.ndarray,
    teacher_tail_logmass_BxS: jnp.ndarray,
    labels_BxS: jnp.ndarray,
    *,
    vocab_size: int,
) -> jnp.ndarray:
  """Teacher ``log p(label)`` ``[B, S]``: exact when the label is in the top-k, else its uniform tail share.

  ``-teacher_label_log_prob`` is the offline stand-in for the teacher's cross-entropy
  (the ``distill/teacher_loss`` metric); ``-inf`` when k = V cannot happen.
  """
  k = teacher_topk_ids_BxSxK.shape[-1]
  hit = teacher_topk_ids_BxSxK == labels_BxS[..., None].astype(teacher_topk_ids_BxSxK.dtype)
  at_label = jnp.sum(jnp.where(hit, teacher_topk_logprobs_BxSxK.astype(jnp.float32), 0.0), axis=-1)
  if k == vocab_size:
    return at_label
  outside = teacher_tail_logmass_BxS.astype(jnp.float32) - jnp.log(jnp.float32(vocab_size - k))
  return jnp.where(jnp.any(hit, axis=-1), at_label, outside)
