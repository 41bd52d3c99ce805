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

"""Every divergence in the dense online, dense offline and lean offline losses against float64 NumPy.

Values of ``distill/divergence_at_T`` and the student gradients of the objective, with padding, at T in
{0.5, 1, 2}, a soft cap on the lean path (the one path that applies it); then the limits: identical models
give 0, JSD's endpoints are the forward and reverse KL, an offline cache with k = V is the dense loss.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import chunked_sparse
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import sparse_tail
from tests import numpy_reference as ref

B, S, D, V, K = 2, 4, 6, 11, 4
SOFTCAP = 3.0
TEMPERATURES = (0.5, 1.0, 2.0)
VALUE_RTOL, VALUE_ATOL = 1e-5, 1e-6
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6
MASK = np.array([[1, 1, 1, 0], [1, 0, 1, 1]], dtype=bool)  # a trailing pad and an interior hole
CASES = [(name, None) for name in ref.DIVERGENCES] + [("jsd", 0.25)]
CASE_IDS = [f"{n}" if p is None else f"{n}_{p}" for n, p in CASES]
PATHS = ("dense_online", "dense_bucket", "dense_renormalize", "lean_bucket", "lean_renormalize")


def _data(seed=0, k=K):
  rng = np.random.default_rng(seed)
  hidden = rng.standard_normal((B, S, D))
  unembed = 1.5 * rng.standard_normal((D, V)) / np.sqrt(D)
  teacher = 3.0 * rng.standard_normal((B, S, V))
  labels = rng.integers(0, V, size=(B, S))
  return hidden, unembed, teacher, labels, ref.topk_cache(teacher, k)


def _capped(logits, cap):
  return cap * np.tanh(np.asarray(logits, np.float64) / cap)


def _weights(temperature):
  return objective.LossWeights(alpha=jnp.float32(1.0), temperature=jnp.float32(temperature), beta=jnp.float32(0.0))


def _cached(cache, tail, renyi=None):
  ids, logprobs, tail_logmass = cache
  return heads.CachedTopK(
      topk_ids_BxSxK=jnp.asarray(ids, jnp.int32),
      topk_logprobs_BxSxK=jnp.asarray(logprobs, jnp.float32),
      tail_logmass_BxS=jnp.asarray(tail_logmass, jnp.float32),
      tail_renyi_BxSxR=renyi,
      tail=tail,
  )


@functools.lru_cache(maxsize=None)
def _compiled(path, name, param, data_seed=0, k=K):
  """jit(value_and_grad) of the objective sum of ``path`` w.r.t. the student (logits, or hidden and unembed)."""
  _, _, teacher_logits, labels, cache = _data(data_seed, k)
  options = {"divergence": name, "divergence_param": param}
  mask, labels = jnp.asarray(MASK), jnp.asarray(labels, jnp.int32)

  def fn(student, temperature):
    weights = _weights(temperature)
    if path == "dense_online":
      teacher = heads.TeacherLogits(logits_BxSxV=jnp.asarray(teacher_logits, jnp.float32))
      out = objective.distillation_terms(student, teacher, labels, mask, weights, **options)
    elif path.startswith("dense_"):
      out = objective.distillation_terms(student, _cached(cache, path[6:]), labels, mask, weights, **options)
    else:
      hidden, unembed = student
      out = chunked_sparse.offline_distillation_terms_from_hidden(
          hidden,
          unembed,
          _cached(cache, path[5:]),
          labels,
          mask,
          weights,
          seq_chunk=3,
          vocab_chunk=4,
          student_logit_softcap=SOFTCAP,
          **options,
      )
    total, _, metrics = out
    return total, metrics

  return jax.jit(jax.value_and_grad(fn, has_aux=True))


def _student(path, hidden, unembed):
  """The student's argument of ``_compiled``: logits (dense paths, no cap) or (hidden, unembed) (lean)."""
  if path.startswith("lean"):
    return (jnp.asarray(hidden, jnp.float32), jnp.asarray(unembed, jnp.float32))
  return jnp.asarray(np.asarray(hidden, np.float32) @ np.asarray(unembed, np.float32))


def _reference_divergence(path, name, param, student_logits, teacher_logits, cache, temperature):
  if path == "dense_online":
    return ref.dense_divergence(name, teacher_logits, student_logits, temperature, param)
  return ref.sparse_divergence(name, cache, student_logits, temperature, path.split("_")[1], param)


def _reference_total(path, name, param, teacher_logits, cache, temperature):
  """float64 ``objective_sum`` (alpha = 1, no features) as a function of the student's logits."""

  def total(logits):
    per_token = _reference_divergence(path, name, param, logits, teacher_logits, cache, temperature)
    return temperature**2 * np.sum(per_token[MASK])

  return total


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,param", CASES, ids=CASE_IDS)
def test_value_and_gradient_match_numpy(path, name, param):
  hidden, unembed, teacher_logits, _, cache = _data()
  # The float32 arrays the library sees, in float64 for the reference.
  hidden, unembed = (np.asarray(x, np.float32).astype(np.float64) for x in (hidden, unembed))
  student = _student(path, hidden, unembed)
  for temperature in TEMPERATURES:
    (total, metrics), grads = _compiled(path, name, param)(student, jnp.float32(temperature))
    want_total = _reference_total(path, name, param, teacher_logits, cache, temperature)
    if path.startswith("lean"):
      logits = _capped(hidden @ unembed, SOFTCAP)
      want_grads = (
          ref.finite_difference(lambda h, f=want_total: f(_capped(h @ unembed, SOFTCAP)), hidden),
          ref.finite_difference(lambda w, f=want_total: f(_capped(hidden @ w, SOFTCAP)), unembed),
      )
    else:
      logits = np.asarray(student, np.float64)
      want_grads = (ref.finite_difference(want_total, logits),)
      grads = (grads,)
    per_token = _reference_divergence(path, name, param, logits, teacher_logits, cache, temperature)
    message = f"{path} {name} T={temperature}"
    assert float(metrics["distill/divergence_at_T"][1]) == MASK.sum()
    got_divergence = float(metrics["distill/divergence_at_T"][0])
    np.testing.assert_allclose(got_divergence, per_token[MASK].sum(), rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=message)
    np.testing.assert_allclose(
        float(total), temperature**2 * per_token[MASK].sum(), rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=message
    )
    for got, want in zip(grads, want_grads):
      assert np.abs(want).max() > 1e-3, message  # a meaningful comparison
      np.testing.assert_allclose(np.asarray(got), want, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=message)


@pytest.mark.parametrize("path", PATHS)
def test_forward_kl_is_the_kl_metric_bit_for_bit(path):
  hidden, unembed, *_ = _data()
  for temperature in (0.5, 2.0):
    (_, metrics), _ = _compiled(path, "forward_kl", None)(_student(path, hidden, unembed), jnp.float32(temperature))
    assert float(metrics["distill/divergence_at_T"][0]) == float(metrics["distill/kl_div_at_T"][0])


# ----------------------------------------------------------------------------- Limits


def _identical_teacher_terms(path, name, temperature):
  """The student against itself: a teacher with the student's logits (online) or their cache with its tail's
  Renyi entropies (exact tail buckets at T in {1/2, 1, 2})."""
  hidden, unembed, _, labels, _ = _data(3)
  logits = np.asarray(hidden, np.float32) @ np.asarray(unembed, np.float32)
  logits_jnp = jnp.asarray(logits)
  mask, labels = jnp.asarray(MASK), jnp.asarray(labels, jnp.int32)
  if path == "dense_online":
    teacher = heads.TeacherLogits(logits_BxSxV=logits_jnp)
  else:
    cache = ref.topk_cache(logits.astype(np.float64), K)
    logp = jax.nn.log_softmax(logits_jnp, axis=-1)
    renyi = sparse_tail.tail_renyi_entropies(logp, jnp.asarray(cache[0], jnp.int32))
    teacher = _cached(cache, path.split("_")[1], renyi)
  options = {"divergence": name, "divergence_param": None}

  def total(student_logits):
    out = objective.distillation_terms(student_logits, teacher, labels, mask, _weights(temperature), **options)
    return out[0], out[2]

  return jax.value_and_grad(total, has_aux=True)(logits_jnp)


@pytest.mark.parametrize("path", ("dense_online", "dense_bucket", "dense_renormalize"))
@pytest.mark.parametrize("name", ref.DIVERGENCES)
def test_identical_teacher_and_student_give_zero(path, name):
  for temperature in TEMPERATURES:
    (total, metrics), grads = _identical_teacher_terms(path, name, temperature)
    message = f"{path} {name} T={temperature}"
    assert abs(float(metrics["distill/divergence_at_T"][0])) < 1e-6 * MASK.sum(), message
    assert abs(float(total)) < 1e-5 * MASK.sum(), message
    if name != "tvd":  # |p - q| has no gradient at p = q; rounding picks a side
      assert np.abs(np.asarray(grads)).max() < 1e-5, message


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("beta,kl", ((0.0, "forward_kl"), (1.0, "reverse_kl")))
def test_jsd_endpoints_are_the_kls(path, beta, kl):
  hidden, unembed, *_ = _data()
  student = _student(path, hidden, unembed)
  (total, metrics), grads = _compiled(path, "jsd", beta)(student, jnp.float32(2.0))
  (want_total, want_metrics), want_grads = _compiled(path, kl, None)(student, jnp.float32(2.0))
  name = "distill/divergence_at_T"
  np.testing.assert_allclose(float(metrics[name][0]), float(want_metrics[name][0]), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(float(total), float(want_total), rtol=1e-6, atol=1e-7)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("tail", ("bucket", "renormalize"))
@pytest.mark.parametrize("name,param", CASES, ids=CASE_IDS)
def test_cache_of_the_whole_vocabulary_is_the_dense_loss(name, param, tail):
  """k = V: the offline losses (dense, and lean with its soft cap) equal the online dense loss, with gradients."""
  hidden, unembed, *_ = _data(2, V)
  logits = _student("dense", hidden, unembed)
  hidden32, unembed32 = _student("lean", hidden, unembed)
  capped = SOFTCAP * jnp.tanh((hidden32 @ unembed32) / SOFTCAP)
  for temperature in (0.5, 2.0):
    t = jnp.float32(temperature)
    message = f"{name} {tail} T={temperature}"
    # The lean path shares cached_teacher_terms with the dense one: its bucket mode is enough here.
    lean = ((f"lean_{tail}", (hidden32, unembed32), capped),) if tail == "bucket" else ()
    for path, student, online_logits in ((f"dense_{tail}", logits, logits),) + lean:
      (want_total, want_metrics), want_grad = _compiled("dense_online", name, param, 2, V)(online_logits, t)
      (total, metrics), grads = _compiled(path, name, param, 2, V)(student, t)
      np.testing.assert_allclose(
          float(metrics["distill/divergence_at_T"][0]),
          float(want_metrics["distill/divergence_at_T"][0]),
          rtol=VALUE_RTOL,
          atol=VALUE_ATOL,
          err_msg=message,
      )
      np.testing.assert_allclose(float(total), float(want_total), rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=message)
      if path.startswith("lean"):  # the chain rule through the cap and the matmul
        d_logits = np.asarray(want_grad) * (1.0 - np.square(np.asarray(capped) / SOFTCAP))
        want_grads = (d_logits @ np.asarray(unembed32).T, np.einsum("bsd,bsv->dv", np.asarray(hidden32), d_logits))
      else:
        grads, want_grads = (grads,), (np.asarray(want_grad),)
      for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(got), want, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=message)
