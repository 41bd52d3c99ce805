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

"""Tests for maxtext_distill_plugin.loss.sparse_losses against an independent float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import losses
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.loss import sparse_losses
from maxtext_distill_plugin.loss import sparse_tail
from maxtext_distill_plugin.teacher_cache import codec
from tests import numpy_reference as ref

RTOL = 1e-5
ATOL = 1e-6
B, S, V, K = 2, 3, 11, 4
TEMPERATURES = (0.5, 1.0, 2.0, 4.0)


def _sparse_kl_divergence(
    student_logits_BxSxV,
    teacher_topk_ids_BxSxK,
    teacher_topk_logprobs_BxSxK,
    teacher_tail_logmass_BxS,
    *,
    temperature=1.0,
    tail="bucket",
    teacher_tail_renyi_BxSxR=None,
):
  """The sparse KL of full student logits as the dense offline loss forms it: checks, gather, KL."""
  *batch_shape, vocab_size = student_logits_BxSxV.shape
  sparse_losses.check_teacher(
      tuple(batch_shape),
      teacher_topk_ids_BxSxK,
      teacher_topk_logprobs_BxSxK,
      teacher_tail_logmass_BxS,
      tail,
      vocab_size,
      teacher_tail_renyi_BxSxR,
  )
  at_ids, lse_at_T = sparse_losses.gather_student(student_logits_BxSxV, teacher_topk_ids_BxSxK, temperature)
  return sparse_losses.sparse_kl_from_gathered(
      at_ids,
      lse_at_T,
      teacher_topk_logprobs_BxSxK,
      teacher_tail_logmass_BxS,
      temperature=temperature,
      tail=tail,
      vocab_size=vocab_size,
      teacher_tail_renyi_BxSxR=teacher_tail_renyi_BxSxR,
  )


def _np_kl(log_p, log_q):
  p = np.exp(log_p)
  with np.errstate(invalid="ignore"):
    return np.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)


def _np_sparse_kl(student_logits, ids, logprobs, tail, temperature, mode):
  """Token by token: the student's tail summed explicitly over the complement of the ids."""
  student_logits, logprobs, tail = (np.asarray(x, np.float64) for x in (student_logits, logprobs, tail))
  out = np.zeros(ids.shape[:-1])
  vocab, k = student_logits.shape[-1], ids.shape[-1]
  for index in np.ndindex(*ids.shape[:-1]):
    token_ids = ids[index]
    q_full = np.exp(ref.log_softmax(student_logits[index] / temperature))
    outside = np.setdiff1d(np.arange(vocab), token_ids)
    if mode == "renormalize":
      p = np.exp(logprobs[index] / temperature)
      out[index] = _np_kl(np.log(p / p.sum()), np.log(q_full[token_ids] / q_full[token_ids].sum()))
      continue
    weights = np.exp(logprobs[index]) ** (1.0 / temperature)
    if k < vocab:  # The tail spread uniformly over its V - k tokens, each tempered.
      weights = np.append(weights, (vocab - k) * (np.exp(tail[index]) / (vocab - k)) ** (1.0 / temperature))
    q = q_full[token_ids] if k == vocab else np.append(q_full[token_ids], q_full[outside].sum())
    out[index] = _np_kl(np.log(weights / weights.sum()), np.log(q))
  return out


def _teacher_topk(teacher_logits, k, rng):
  """Exact top-k ids (shuffled within each row), their log-probs and the tail log-mass, float64."""
  logp = ref.log_softmax(teacher_logits)
  ids = np.argsort(-logp, axis=-1)[..., :k]
  ids = np.take_along_axis(ids, rng.permuted(np.broadcast_to(np.arange(k), ids.shape), axis=-1), axis=-1)
  at_ids = np.take_along_axis(logp, ids, axis=-1)
  rest = logp.copy()
  np.put_along_axis(rest, ids, -np.inf, axis=-1)
  with np.errstate(divide="ignore"):
    tail = np.log(np.exp(rest).sum(-1))
  return ids.astype(np.int32), at_ids, tail


@pytest.fixture(name="case")
def _case():
  rng = np.random.default_rng(0)
  teacher = rng.normal(size=(B, S, V)) * 2.0
  student = rng.normal(size=(B, S, V)) * 2.0
  ids, logprobs, tail = _teacher_topk(teacher, K, rng)
  return rng, teacher, student, ids, logprobs, tail


def _jax_kl(student, ids, logprobs, tail, temperature, mode):
  return _sparse_kl_divergence(
      jnp.asarray(student, jnp.float32),
      jnp.asarray(ids),
      jnp.asarray(logprobs, jnp.float32),
      jnp.asarray(tail, jnp.float32),
      temperature=temperature,
      tail=mode,
  )


@pytest.mark.parametrize("mode", sparse_losses.TAIL_MODES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_matches_numpy_reference(case, mode, temperature):
  _, _, student, ids, logprobs, tail = case
  got = _jax_kl(student, ids, logprobs, tail, temperature, mode)
  assert got.shape == (B, S)
  np.testing.assert_allclose(got, _np_sparse_kl(student, ids, logprobs, tail, temperature, mode), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", sparse_losses.TAIL_MODES)
@pytest.mark.parametrize("temperature", (1.0, 2.0))
def test_full_vocabulary_equals_dense_kl(mode, temperature):
  rng = np.random.default_rng(1)
  teacher, student = rng.normal(size=(B, S, V)) * 3.0, rng.normal(size=(B, S, V)) * 3.0
  ids, logprobs, tail = _teacher_topk(teacher, V, rng)
  assert np.all(np.isneginf(tail))
  dense = losses.kl_from_log_probs(
      losses.log_softmax_at(jnp.asarray(teacher, jnp.float32), temperature),
      losses.log_softmax_at(jnp.asarray(student, jnp.float32), temperature),
  )
  np.testing.assert_allclose(_jax_kl(student, ids, logprobs, tail, temperature, mode), dense, rtol=RTOL, atol=ATOL)


def test_bucket_is_zero_for_identical_models_at_t1(case):
  _, teacher, _, ids, logprobs, tail = case
  np.testing.assert_allclose(_jax_kl(teacher, ids, logprobs, tail, 1.0, "bucket"), 0.0, atol=ATOL)


def test_renormalize_ignores_the_tail(case):
  _, _, student, ids, logprobs, tail = case
  np.testing.assert_allclose(
      _jax_kl(student, ids, logprobs, tail, 2.0, "renormalize"),
      _jax_kl(student, ids, logprobs, tail - 5.0, 2.0, "renormalize"),
      rtol=RTOL,
      atol=ATOL,
  )


def test_mask_equals_slice(case):
  _, _, student, ids, logprobs, tail = case
  mask = np.array([[True, False, True], [False, True, True]])
  total, count = reductions.masked_sum_count(_jax_kl(student, ids, logprobs, tail, 2.0, "bucket"), jnp.asarray(mask))
  sliced = _jax_kl(student[mask][None], ids[mask][None], logprobs[mask][None], tail[mask][None], 2.0, "bucket")
  np.testing.assert_allclose(total, jnp.sum(sliced), rtol=RTOL)
  assert count == mask.sum()


def test_jit_with_traced_temperature(case):
  _, _, student, ids, logprobs, tail = case
  jitted = jax.jit(_sparse_kl_divergence, static_argnames="tail")
  for mode in sparse_losses.TAIL_MODES:
    got = jitted(
        student.astype(np.float32), ids, logprobs.astype(np.float32), tail.astype(np.float32), temperature=2.0, tail=mode
    )
    np.testing.assert_allclose(got, _jax_kl(student, ids, logprobs, tail, 2.0, mode), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", sparse_losses.TAIL_MODES)
@pytest.mark.parametrize("temperature", (1.0, 2.0))
def test_gradient_matches_numpy_finite_differences(case, mode, temperature):
  _, _, student, ids, logprobs, tail = case

  def total(logits):
    return jnp.sum(_jax_kl(logits, ids, logprobs, tail, temperature, mode))

  got = jax.grad(total)(jnp.asarray(student, jnp.float32))
  expected, eps = np.zeros_like(student), 1e-5
  for index in np.ndindex(*student.shape):
    plus, minus = student.copy(), student.copy()
    plus[index] += eps
    minus[index] -= eps
    difference = _np_sparse_kl(plus, ids, logprobs, tail, temperature, mode) - _np_sparse_kl(
        minus, ids, logprobs, tail, temperature, mode
    )
    expected[index] = difference.sum() / (2 * eps)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_confident_student_and_empty_teacher_tail_stay_finite():
  rng = np.random.default_rng(2)
  ids = np.tile(np.arange(K, dtype=np.int32), (B, S, 1))
  student = np.full((B, S, V), -80.0)
  student[..., :K] = 20.0  # the student's tail underflows float32 relative precision
  logprobs = np.full((B, S, K), -np.log(K))
  tail = np.full((B, S), -np.inf)  # converted upstream caches carry no tail
  for mode in sparse_losses.TAIL_MODES:
    value, grad = jax.value_and_grad(lambda z, m=mode: jnp.sum(_jax_kl(z, ids, logprobs, tail, 2.0, m)))(
        jnp.asarray(student, jnp.float32)
    )
    assert np.isfinite(value) and np.all(np.isfinite(grad))
  del rng


def test_bfloat16_student_logits(case):
  _, _, student, ids, logprobs, tail = case
  got = _jax_kl(jnp.asarray(student, jnp.bfloat16), ids, logprobs, tail, 1.0, "bucket")
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, _np_sparse_kl(student, ids, logprobs, tail, 1.0, "bucket"), rtol=5e-2, atol=5e-2)


def test_topk_coverage(case):
  _, _, _, _, logprobs, tail = case
  np.testing.assert_allclose(sparse_losses.topk_coverage(jnp.asarray(tail)), np.exp(logprobs).sum(-1), rtol=RTOL)


def test_rejects_bad_shapes_and_modes(case):
  _, _, student, ids, logprobs, tail = case
  with pytest.raises(ValueError, match="tail="):
    _jax_kl(student, ids, logprobs, tail, 1.0, "drop")
  with pytest.raises(ValueError, match="share"):
    _jax_kl(student, ids[:, :2], logprobs, tail, 1.0, "bucket")
  with pytest.raises(ValueError, match="tail log-mass"):
    _jax_kl(student, ids, logprobs, tail[:, :2], 1.0, "bucket")


# --- Peaked teachers at T != 1: the loss is minimal (zero, zero gradient) at student = teacher. ---

ZIPF_V, ZIPF_K = 32768, 128
ZIPF_EXPONENTS = (0.8, 1.0, 1.2, 1.5)  # one token each: tail mass from ~0.75 down to ~0.06


def _np_tail_renyi(logp, ids):
  """float64 Renyi entropies of each token's normalised tail at the stored orders, ``[..., R]``."""
  rest = np.array(logp, np.float64)
  np.put_along_axis(rest, ids, -np.inf, axis=-1)
  mass = np.log(np.exp(rest).sum(-1, keepdims=True))
  r = np.exp(rest - mass)
  out = []
  for tau in sparse_losses.TAIL_RENYI_ORDERS:
    if tau == 1.0:
      out.append(-np.sum(np.where(r > 0, r * np.log(np.where(r > 0, r, 1.0)), 0.0), axis=-1))
    else:
      out.append(np.log(np.sum(r**tau, axis=-1)) / (1.0 - tau))
  return np.stack(out, axis=-1)


def _np_exact_bucket_kl(student_logits, teacher_logits, ids, temperature):
  """KL over the k+1 buckets of the exactly tempered teacher (full vocabulary) and student, float64."""
  p = np.exp(ref.log_softmax(np.asarray(teacher_logits, np.float64) / temperature))
  q = np.exp(ref.log_softmax(np.asarray(student_logits, np.float64) / temperature))
  out = np.zeros(ids.shape[:-1])
  for index in np.ndindex(*ids.shape[:-1]):
    inside = np.zeros(p.shape[-1], bool)
    inside[ids[index]] = True
    buckets_p = np.append(p[index][ids[index]], p[index][~inside].sum())
    buckets_q = np.append(q[index][ids[index]], q[index][~inside].sum())
    out[index] = _np_kl(np.log(buckets_p), np.log(buckets_q))
  return out


@pytest.fixture(name="zipf", scope="module")
def _zipf():
  """``[1, 4, 32768]`` Zipf-like teacher logits (ranks shuffled over the vocabulary), its top-128 and tail stats."""
  rng = np.random.default_rng(7)
  ranks = np.stack([rng.permutation(ZIPF_V) + 1 for _ in ZIPF_EXPONENTS])
  logits = -np.asarray(ZIPF_EXPONENTS)[:, None] * np.log(ranks) + rng.normal(size=ranks.shape) * 0.1
  logits = logits[None]
  ids, logprobs, tail = _teacher_topk(logits, ZIPF_K, rng)
  return logits, ids, logprobs, tail, _np_tail_renyi(ref.log_softmax(logits), ids)


def _zipf_kl(student, zipf, temperature, renyi="exact"):
  _, ids, logprobs, tail, exact_renyi = zipf
  stats = None if renyi is None else jnp.asarray(exact_renyi if renyi == "exact" else renyi, jnp.float32)
  return _sparse_kl_divergence(
      jnp.asarray(student, jnp.float32),
      jnp.asarray(ids),
      jnp.asarray(logprobs, jnp.float32),
      jnp.asarray(tail, jnp.float32),
      temperature=temperature,
      tail="bucket",
      teacher_tail_renyi_BxSxR=stats,
  )


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_zipf_student_equal_to_teacher_is_the_minimum(zipf, temperature):
  logits = zipf[0]
  value, grad = jax.value_and_grad(lambda z: jnp.sum(_zipf_kl(z, zipf, temperature)))(jnp.asarray(logits, jnp.float32))
  # float32 rounding (~1e-6) is all that is left (a uniform tail gives 0.028 nats at T=2 here).
  np.testing.assert_allclose(value, 0.0, atol=2e-6)
  assert float(jnp.sum(jnp.abs(grad))) * temperature < 1e-4
  # A perturbed student is measured exactly (the teacher's buckets are exact at this T).
  student = logits + np.random.default_rng(3).normal(size=logits.shape) * 0.3
  np.testing.assert_allclose(
      _zipf_kl(student, zipf, temperature),
      _np_exact_bucket_kl(student, logits, zipf[1], temperature),
      rtol=1e-4,
      atol=2e-6,
  )


@pytest.mark.parametrize("temperature", (0.7, 1.5, 3.0))
def test_zipf_between_the_stored_orders_stays_within_the_interpolation_error(zipf, temperature):
  logits = zipf[0]
  soft = float(jnp.max(_zipf_kl(logits, zipf, temperature))) * temperature**2
  uniform = float(jnp.max(_zipf_kl(logits, zipf, temperature, renyi=None))) * temperature**2
  assert soft < 1e-4 < uniform  # the module docstring's measured bound between nodes (4e-5 on these teachers)


def test_zipf_uniform_tail_is_exact_only_at_t1(zipf):
  logits = zipf[0]
  np.testing.assert_allclose(_zipf_kl(logits, zipf, 1.0, renyi=None), 0.0, atol=2e-6)
  # T^2 KL at T=2: the format-1 bias (0.028 nats on average here; 0.089 at exponent 1.5) that format 2 removes.
  assert 4.0 * float(jnp.mean(_zipf_kl(logits, zipf, 2.0, renyi=None))) > 1e-2


def test_tail_renyi_entropies_match_numpy(zipf):
  logits, ids, _, _, exact = zipf
  got = sparse_tail.tail_renyi_entropies(jnp.asarray(ref.log_softmax(logits), jnp.float32), jnp.asarray(ids))
  np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)
  assert np.all(np.diff(exact, axis=-1) <= 0) and np.all(exact <= np.log(ZIPF_V - ZIPF_K))
  empty = sparse_tail.tail_renyi_entropies(jnp.zeros((1, 1, 4)), jnp.arange(4)[None, None])
  np.testing.assert_allclose(empty, 0.0)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_zipf_full_vocabulary_equals_online_dense_kl(temperature):
  rng = np.random.default_rng(8)
  vocab = 2048
  teacher = -np.log(rng.permutation(vocab) + 1.0)[None, None] * 1.2
  student = teacher + rng.normal(size=teacher.shape) * 0.5
  ids, logprobs, tail = _teacher_topk(teacher, vocab, rng)
  renyi = np.zeros(ids.shape[:-1] + (len(sparse_losses.TAIL_RENYI_ORDERS),))
  got = _sparse_kl_divergence(
      jnp.asarray(student, jnp.float32),
      jnp.asarray(ids),
      jnp.asarray(logprobs, jnp.float32),
      jnp.asarray(tail, jnp.float32),
      temperature=temperature,
      teacher_tail_renyi_BxSxR=jnp.asarray(renyi, jnp.float32),
  )
  dense = losses.kl_from_log_probs(
      losses.log_softmax_at(jnp.asarray(teacher, jnp.float32), temperature),
      losses.log_softmax_at(jnp.asarray(student, jnp.float32), temperature),
  )
  np.testing.assert_allclose(got, dense, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_zipf_through_the_cache_codec_stays_within_its_error(zipf, temperature):
  """Quantised log-probs (step) and entropies (log(V-k)/2^16): KL <= (tau step + |1-tau| quantum/2)^2 / 8 (Hoeffding)."""
  logits, ids, logprobs, tail, renyi = zipf
  block = codec.decode_topk(codec.encode_topk(ids[0], logprobs[0], tail[0], vocab_size=ZIPF_V, tail_renyi_NxR=renyi[0]))
  tau, step, quantum = 1.0 / temperature, codec.DEFAULT_LOGPROB_STEP, np.log(ZIPF_V - ZIPF_K) / 65535
  bound = (tau * step + abs(1.0 - tau) * quantum / 2) ** 2 / 8

  def per_token(z):
    return _sparse_kl_divergence(
        z,
        jnp.asarray(block.ids[None]),
        jnp.asarray(block.logprobs[None]),
        jnp.asarray(block.tail_logmass[None]),
        temperature=temperature,
        teacher_tail_renyi_BxSxR=jnp.asarray(block.tail_renyi[None]),
    )

  student = jnp.asarray(logits, jnp.float32)
  assert float(jnp.max(per_token(student))) <= bound + 2e-6
  grad = jax.grad(lambda z: jnp.sum(per_token(z)))(student)
  # Per token, T * |dKL/dz|_1 = 2 TV(P, Q) <= sqrt(2 KL) (Pinsker).
  assert float(jnp.max(jnp.sum(jnp.abs(grad), axis=-1))) * temperature <= np.sqrt(2 * (bound + 2e-6))


def test_tail_interpolation_is_the_monotone_cubic_through_the_stored_entropies(zipf):
  """Against SciPy's PCHIP (an independent implementation) through (0, log(V-k)) and the stored orders."""
  from scipy import interpolate  # pylint: disable=import-outside-toplevel

  _, _, _, tail, renyi = zipf
  nodes = (0.0,) + sparse_tail.TAIL_RENYI_ORDERS
  values = np.concatenate([np.full(renyi.shape[:-1] + (1,), np.log(ZIPF_V - ZIPF_K)), renyi], axis=-1)
  for temperature in (0.5, 0.6, 0.8, 1.0, 1.3, 2.0, 2.5, 3.5, 4.0):
    tau = 1.0 / temperature
    got = sparse_tail.tail_log_weight(
        jnp.asarray(tail, jnp.float32), jnp.asarray(renyi, jnp.float32), temperature, ZIPF_V - ZIPF_K
    )
    entropy = interpolate.PchipInterpolator(nodes, values, axis=-1)(tau)
    np.testing.assert_allclose(got, tau * tail + (1.0 - tau) * entropy, rtol=1e-5, atol=2e-5, err_msg=str(temperature))
