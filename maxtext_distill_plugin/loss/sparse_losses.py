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

The teacher is known only through what the offline cache stores per token: its top-k
ids, their log-probabilities ``l_i = log p_i`` at T=1, the log of the remaining
(tail) mass ``g(1) = log sum_{j in R} p_j`` over the ``V - k`` other tokens ``R``,
and (format 2) a few Renyi entropies of that tail (below). The student enters only
through two gathered quantities, so the same formula serves full ``[B, S, V]``
logits (:func:`gather_student`, :mod:`cached_objective`) and the memory-lean loss, which computes them
tile by tile (:mod:`chunked_sparse`):

  z_ids = z[ids] ``[B, S, k]`` and lse_T = logsumexp(z / T) over all V ``[B, S]``.

Two ways to compare the two distributions (:func:`sparse_kl_from_gathered`):

``tail="bucket"`` (default): k+1 outcomes, the k ids and one bucket for all other
tokens. With ``tau = 1/T`` the tempered teacher is ``p_j(T) = p_j^tau / Z``, so its
buckets are

  log P_i(T) = tau l_i - log N,   log P_tail(T) = g(tau) - log N,
  N = sum_i exp(tau l_i) + exp(g(tau)),   g(tau) = log sum_{j in R} p_j^tau.

The student's buckets are exact at any T: ``log Q_i = z_i / T - lse_T`` and its own
mass outside the ids, ``log(1 - sum_i Q_i)`` (no ``[B, S, k, V]`` one-hot, no
scatter; in float32 resolved to about ``1e-7`` of the mass, floored at ``2^-23``).
If ``P(T)`` is exact, a student equal to the teacher has ``Q = P`` bucket by bucket:
the KL over the k+1 buckets is 0, and so is its gradient, ``dKL/dz_j = (Q_b - P_b)
q_j / (T Q_b)`` for token ``j`` in bucket ``b``. So the whole question is ``g(tau)``.

*What is known about g.* ``g`` is a log-sum-exp of ``tau log p_j``, hence convex in
``tau``; ``g(0) = log(V - k)`` and ``g(1)`` is stored. Write ``r_j = p_j / e^{g(1)}``
for the tail's own distribution; then

  g(tau) = tau g(1) + (1 - tau) H_tau(r),   H_tau(r) = log(sum_j r_j^tau) / (1 - tau),

where ``H_tau`` is the Renyi entropy of order ``tau`` (``H_1`` the Shannon entropy,
``H_0 = log(V - k)``), non-increasing in ``tau`` and between 0 and ``log(V - k)``.
Format 1 caches hold ``g(1)`` only; treating the tail as uniform means
``H_tau = log(V - k)`` for all ``tau``, exact at T=1 only: for T > 1 it over-states
the tempered tail, for T < 1 it under-states it, so the loss is no longer minimal
at student = teacher (``T^2 KL`` of 0.03 to 0.09 nats at T=2 on Zipf teachers, V=32k, k=128).

*Format 2.* The writer computes ``H_tau`` from the teacher's full log-probabilities
at the orders :data:`TAIL_RENYI_ORDERS` ``tau in {1/4, 1/2, 1, 2}``, i.e. at
T in {4, 2, 1, 1/2}, and :func:`sparse_tail.tail_log_weight` interpolates ``H`` in
``tau`` between them (with ``H_0 = log(V - k)`` as one more node) by a monotone cubic.
Then ``g`` is exact at the nodes and at T=1 (the factor ``1 - tau`` vanishes), and
``H`` stays non-increasing. Interpolating ``H`` rather than ``g`` follows the
curvature: the worst ``T^2 KL`` this leaves between nodes over T in [1/2, 4] is
below 1.5e-4 nats on Zipf, Gaussian-logit and LM-like teachers (V=32k, k=128), against
2.3e-2 for chords of ``g`` (:mod:`sparse_tail`). Temperatures outside [1/2, 4]
(:data:`TEMPERATURE_RANGE`) are refused by the config check for such caches.

Error at student = teacher with a format-2 cache: the log-probs' quantisation
errors span an interval of width ``step`` that contains the tail's (0), so at T the
bucket log-weights' errors span ``tau step`` and by Hoeffding's lemma
``KL <= (tau step)^2 / 8``, i.e. ``T^2 KL <= step^2 / 8`` (4.9e-4 nats at the default
step 1/16) at every T; the entropies are quantised to ``log(V-k) / 2^17``
(8e-5 nats at V=32k), which moves ``g`` by ``|1 - tau|`` times that and widens the
interval by as much (``T^2 KL`` grows by < 4e-6 for T <= 4); between the nodes add
the interpolation error above.

``tail="renormalize"``: both distributions renormalised over the k ids (upstream
MaxText's offline loss); the only choice when the tail is unknown (caches converted
from upstream). The tempered teacher conditioned on its top-k, ``p_i^tau / sum_K
p^tau``, needs no tail statistic, so this mode is minimal at student = teacher at
every T too (up to quantisation); it needs no ``lse_T``.

With k = V the tail is empty and both modes equal the dense KL of
the dense forward KL (:func:`maxtext_distill_plugin.loss.losses.kl_from_log_probs`) at any T.

*Other divergences* (``distill_divergence``, :mod:`maxtext_distill_plugin.loss.divergences`) apply their
elementwise form to the same outcomes (:func:`bucket_log_probs`): the k+1 buckets, or the k renormalised
ids. Every one of them is an f-divergence, and merging the ``V - k`` tail tokens into one outcome can only
lower an f-divergence (data processing), so with exact bucket masses (T = 1, or a format-2 cache at its
nodes) the bucketed value is a lower bound of the full-vocabulary one, equal to it at k = V:

  ============================  =============================================================================
  divergence                    ``tail="bucket"``: what the k+1 buckets miss of the full-vocabulary value
  ============================  =============================================================================
  forward_kl                    ``P_tail KL(p|tail || q|tail)`` (chain rule); exact if q is proportional to p
                                on the tail
  reverse_kl                    ``Q_tail KL(q|tail || p|tail)``; exact under the same condition
  jsd, skew_kl, skew_reverse_kl a non-negative remainder (data processing); exact if ``p / q`` is constant on
                                the tail
  tvd                           ``sum_tail |p - q| / 2 - |P_tail - Q_tail| / 2``; exact if ``p - q`` has one
                                sign on the tail
  ============================  =============================================================================

The k terms of the ids are exact in every case, and the student's buckets are exact at any T (up to the
``2^-23`` floor of its tail); the teacher's tail bucket at T != 1 is the approximation described above
(format 1: a uniform tail; format 2: interpolated between its Renyi nodes). ``tail="renormalize"`` is the
exact divergence between the two distributions *conditioned on the teacher's top-k*, a different quantity
(neither bound) that equals the full one at k = V. All log-probabilities are finite (the cache's log-probs
are finite, the writer's tail log-mass is a log-sum-exp of finite log-probs, the student's tail is
floored), so the reverse and skew KLs cannot meet the ``+inf`` of a zero teacher bucket here.
"""

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import sparse_tail

TAIL_MODES = ("bucket", "renormalize")
TAIL_RENYI_ORDERS = sparse_tail.TAIL_RENYI_ORDERS
TEMPERATURE_RANGE = sparse_tail.TEMPERATURE_RANGE
_TAIL_FLOOR = 2.0**-23


def check_teacher(
    batch_shape, ids_BxSxK, logprobs_BxSxK, tail_logmass_BxS, tail: str, vocab_size: int, tail_renyi_BxSxR=None
) -> None:
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
  renyi_shape = tuple(batch_shape) + (len(TAIL_RENYI_ORDERS),)
  if tail_renyi_BxSxR is not None and tail_renyi_BxSxR.shape != renyi_shape:
    raise ValueError(f"teacher tail Renyi entropies {tail_renyi_BxSxR.shape} must be [B, S, R] = {renyi_shape}")
  if ids_BxSxK.shape[-1] > vocab_size:
    raise ValueError(f"k={ids_BxSxK.shape[-1]} exceeds the student's vocabulary {vocab_size}")


def gather_student(student_logits_BxSxV: jnp.ndarray, ids_BxSxK: jnp.ndarray, temperature):
  """What the sparse KL needs from full logits: ``(z_ids [B, S, k], lse_T [B, S])``, float32."""
  logits = student_logits_BxSxV.astype(jnp.float32)
  at_ids = jnp.take_along_axis(logits, ids_BxSxK.astype(jnp.int32), axis=-1)
  return at_ids, jax.nn.logsumexp(logits / temperature, axis=-1)


def student_bucket_log_probs_from_gathered(student_logits_at_ids_BxSxK, student_lse_at_T_BxS, temperature):
  """Student ``log q(T)`` at the ids ``[B, S, k]`` and of its mass outside them ``[B, S]`` (float32, the tail floored
  at ``2^-23``) from ``z_ids`` and ``lse_T = logsumexp(z / T)`` over the whole vocabulary."""
  log_q_ids = student_logits_at_ids_BxSxK.astype(jnp.float32) / temperature - student_lse_at_T_BxS[..., None]
  captured = jnp.sum(jnp.exp(log_q_ids), axis=-1)
  return log_q_ids, jnp.log(jnp.maximum(1.0 - captured, _TAIL_FLOOR))


def teacher_bucket_log_probs(
    logprobs_BxSxK: jnp.ndarray, tail_logmass_BxS: jnp.ndarray, temperature, vocab_size: int, tail_renyi_BxSxR=None
):
  """Teacher ``log P(T)`` over the k ids ``[B, S, k]`` and the tail bucket ``[B, S]``.

  Args:
    logprobs_BxSxK: ``[B, S, k]`` teacher log-probabilities at T=1.
    tail_logmass_BxS: ``[B, S]`` log of the teacher's mass outside the k ids (``-inf`` if none).
    temperature: positive scalar T.
    vocab_size: V.
    tail_renyi_BxSxR: ``[B, S, R]`` the tail's Renyi entropies (:func:`sparse_tail.tail_log_weight`), or None.

  Returns:
    ``(log_p_ids_BxSxK, log_p_tail_BxS)``, normalised over the k+1 buckets.
  """
  k = logprobs_BxSxK.shape[-1]
  weights = logprobs_BxSxK.astype(jnp.float32) / temperature
  if k == vocab_size:
    return weights - jax.nn.logsumexp(weights, axis=-1, keepdims=True), jnp.full(weights.shape[:-1], -jnp.inf)
  tail_weight = sparse_tail.tail_log_weight(tail_logmass_BxS, tail_renyi_BxSxR, temperature, vocab_size - k)
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
    teacher_tail_renyi_BxSxR: jnp.ndarray | None = None,
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
    teacher_tail_renyi_BxSxR: ``[B, S, R]`` Renyi entropies of the teacher's tail at :data:`TAIL_RENYI_ORDERS`
      (format-2 caches), or None (a uniform tail: exact at T=1 only); unused by ``renormalize``.

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
      teacher_topk_logprobs_BxSxK, teacher_tail_logmass_BxS, temperature, vocab_size, teacher_tail_renyi_BxSxR
  )
  kl = jnp.sum(_kl_terms(log_p_ids, log_q_ids), axis=-1)
  if k < vocab_size:
    kl = kl + _kl_terms(log_p_tail, log_q_tail)
  return kl


def bucket_log_probs(
    student_logits_at_ids_BxSxK: jnp.ndarray,
    student_lse_at_T_BxS: jnp.ndarray | None,
    teacher_topk_logprobs_BxSxK: jnp.ndarray,
    teacher_tail_logmass_BxS: jnp.ndarray,
    *,
    temperature,
    tail: str,
    vocab_size: int,
    teacher_tail_renyi_BxSxR: jnp.ndarray | None = None,
):
  """The teacher's and the student's log-probabilities at T over the outcomes the sparse loss compares.

  ``tail="bucket"``: the k ids and the tail bucket, ``[B, S, k+1]`` (the k ids alone when k = V: there is no
  tail); ``"renormalize"``: both renormalised over the k ids, ``[B, S, k]``. Any divergence of
  :mod:`maxtext_distill_plugin.loss.divergences` applies to the pair (module docstring: what that is exact for).
  Arguments as :func:`sparse_kl_from_gathered`.

  Returns:
    ``(teacher_logp, student_logp)``, float32, each normalised over its last axis.
  """
  if tail not in TAIL_MODES:
    raise ValueError(f"tail={tail!r} is unknown. Fix: use one of {TAIL_MODES}.")
  if tail == "renormalize":
    teacher = jax.nn.log_softmax(teacher_topk_logprobs_BxSxK.astype(jnp.float32) / temperature, axis=-1)
    student = jax.nn.log_softmax(student_logits_at_ids_BxSxK.astype(jnp.float32) / temperature, axis=-1)
    return teacher, student
  log_q_ids, log_q_tail = student_bucket_log_probs_from_gathered(
      student_logits_at_ids_BxSxK, student_lse_at_T_BxS, temperature
  )
  log_p_ids, log_p_tail = teacher_bucket_log_probs(
      teacher_topk_logprobs_BxSxK, teacher_tail_logmass_BxS, temperature, vocab_size, teacher_tail_renyi_BxSxR
  )
  if student_logits_at_ids_BxSxK.shape[-1] == vocab_size:
    return log_p_ids, log_q_ids
  return (
      jnp.concatenate([log_p_ids, log_p_tail[..., None]], axis=-1),
      jnp.concatenate([log_q_ids, log_q_tail[..., None]], axis=-1),
  )


def teacher_buckets_at_1(teacher_topk_logprobs_BxSxK, teacher_tail_logmass_BxS, *, vocab_size: int) -> jnp.ndarray:
  """The teacher's k+1 bucket log-probabilities at T = 1, ``[B, S, k+1]`` (no tail statistic needed at T = 1).

  A tail log-mass of ``-inf`` (k = V, or a cache that stores no tail) gives the tail bucket probability 0.
  """
  log_p_ids, log_p_tail = teacher_bucket_log_probs(teacher_topk_logprobs_BxSxK, teacher_tail_logmass_BxS, 1.0, vocab_size)
  return jnp.concatenate([log_p_ids, log_p_tail[..., None]], axis=-1)


def topk_coverage(teacher_tail_logmass_BxS: jnp.ndarray) -> jnp.ndarray:
  """Teacher mass captured by its top-k, ``1 - exp(tail)``, per token ``[B, S]``."""
  return -jnp.expm1(teacher_tail_logmass_BxS.astype(jnp.float32))
