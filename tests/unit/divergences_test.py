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

"""Tests for maxtext_distill_plugin.loss.divergences against independent float64 NumPy references.

Every divergence case is evaluated inside one jitted function per check (one compile each),
which keeps the file fast; failures name the case.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import divergences
from maxtext_distill_plugin.loss import losses
from tests import numpy_reference as ref

RTOL, ATOL = 1e-5, 1e-6
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6
B, S, V = 2, 3, 11
TEMPERATURES = np.array([0.5, 1.0, 2.0])
# (name, param): each divergence at one or more parameter values.
CASES = (
    ("forward_kl", None),
    ("reverse_kl", None),
    ("jsd", 0.1),
    ("jsd", 0.5),
    ("jsd", 0.9),
    ("skew_kl", 0.1),
    ("skew_kl", 0.5),
    ("skew_reverse_kl", 0.1),
    ("skew_reverse_kl", 0.5),
    ("tvd", None),
)


def _case_id(case):
  return f"{case[0]}({case[1]})"


# ----------------------------------------------------------------------------- NumPy float64 references


def _np_from_logits(name, teacher, student, temperature, param):
  return ref.dense_divergence(name, teacher, student, temperature, param)


def _np_student_grad(name, teacher, student, temperature, param, weights, step=1e-5):
  """d sum(weights * D) / d student logits by float64 central differences, all entries at once."""
  student = np.asarray(student, np.float64)
  basis = step * np.eye(student.size).reshape((student.size,) + student.shape)
  up = _np_from_logits(name, teacher, student + basis, temperature, param)
  down = _np_from_logits(name, teacher, student - basis, temperature, param)
  return (np.sum(weights * (up - down), axis=(1, 2)) / (2.0 * step)).reshape(student.shape)


# ----------------------------------------------------------------------------- inputs and jitted evaluations


def _logits(rng, kind="random", shape=(B, S, V)):
  if kind == "random":
    return (3.0 * rng.standard_normal(shape)).astype(np.float32)
  # Peaked: one token far above the rest, as a confident LM head gives.
  logits = 2.0 * rng.standard_normal(shape)
  np.put_along_axis(logits, rng.integers(0, shape[-1], shape[:-1] + (1,)), 12.0, axis=-1)
  return logits.astype(np.float32)


def _log_softmax_at(logits, temperature):
  return jax.nn.log_softmax(logits / temperature, axis=-1)


@jax.jit
def _all_values(teacher_logp, student_logp):
  """``[len(CASES), ...]``: every case through the registry."""
  return jnp.stack([divergences.DIVERGENCES[n](teacher_logp, student_logp, param=p) for n, p in CASES])


@jax.jit
def _all_values_and_grads(teacher_logits, student_logits, temperature, weights):
  """Per case: ``sum(weights * D(teacher_T, student_T))`` and its gradient w.r.t. the student logits."""
  teacher_logp = _log_softmax_at(teacher_logits, temperature)

  def objective(z, name, param):
    per_token = divergences.DIVERGENCES[name](teacher_logp, _log_softmax_at(z, temperature), param=param)
    return jnp.sum(weights * per_token)

  values, grads = zip(
      *(jax.value_and_grad(functools.partial(objective, name=n, param=p))(student_logits) for n, p in CASES)
  )
  return jnp.stack(values), jnp.stack(grads)


def _ones(dtype=jnp.float32):
  return jnp.ones((B, S), dtype)


# ----------------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("kind", ("random", "peaked"))
def test_values_match_reference_at_each_temperature(kind):
  rng = np.random.default_rng(0)
  teacher, student = _logits(rng, kind), _logits(rng, kind)
  temps = jnp.asarray(TEMPERATURES, jnp.float32)[:, None, None, None]
  got = _all_values(_log_softmax_at(jnp.asarray(teacher), temps), _log_softmax_at(jnp.asarray(student), temps))
  assert got.shape == (len(CASES), len(TEMPERATURES), B, S) and got.dtype == jnp.float32
  for case, got_case in zip(CASES, np.asarray(got)):
    for temperature, got_t in zip(TEMPERATURES, got_case):
      want = _np_from_logits(case[0], teacher, student, temperature, case[1])
      np.testing.assert_allclose(got_t, want, rtol=RTOL, atol=ATOL, err_msg=f"{_case_id(case)} T={temperature}")


@pytest.mark.parametrize("kind", ("random", "peaked"))
def test_student_gradients_match_finite_differences(kind):
  rng = np.random.default_rng(1)
  teacher, student = _logits(rng, kind), _logits(rng, kind)
  # A random per-token weight also checks that no gradient leaks across tokens.
  weights = rng.uniform(0.5, 2.0, size=(B, S))
  for temperature in TEMPERATURES:
    _, got32 = _all_values_and_grads(teacher, student, jnp.float32(temperature), jnp.asarray(weights, jnp.float32))
    with jax.enable_x64(True):  # the same code in float64 checks the math itself, to the differences' accuracy
      _, got64 = _all_values_and_grads(*(jnp.asarray(x, jnp.float64) for x in (teacher, student, temperature, weights)))
      assert got64.dtype == jnp.float64
    for case, g32, g64 in zip(CASES, np.asarray(got32), np.asarray(got64)):
      want = _np_student_grad(case[0], teacher, student, temperature, case[1], weights)
      message = f"{_case_id(case)} T={temperature}"
      # float32 rounding is absolute on the scale of the terms each entry is a difference of: terms like
      # q_v |log q_v - log p_v|, as large as the gradient itself or the per-token divergence (reverse KL
      # at T = 0.5 reaches a gradient of 10 on random logits and a value of 32 on peaked ones).
      scale = max(1.0, np.abs(want).max(), _np_from_logits(case[0], teacher, student, temperature, case[1]).max())
      np.testing.assert_allclose(g32, want, rtol=GRAD_RTOL, atol=GRAD_ATOL * scale, err_msg=message)
      np.testing.assert_allclose(g64, want, rtol=1e-6, atol=1e-8, err_msg="float64 " + message)


def test_forward_kl_is_todays_kl():
  """Bit for bit where today's KL is >= 0; the same gradient everywhere (the clamp is straight-through)."""
  rng = np.random.default_rng(2)
  for kind in ("random", "peaked"):
    teacher = _log_softmax_at(jnp.asarray(_logits(rng, kind)), 2.0)
    student = _log_softmax_at(jnp.asarray(_logits(rng, kind)), 2.0)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(divergences.lookup("forward_kl"))(teacher, student)),
        np.asarray(jax.jit(losses.kl_from_log_probs)(teacher, student)),
    )
  # Identical distributions up to rounding: today's KL may round below 0, ours is clamped there.
  logits = jnp.asarray(_logits(rng, "peaked"))
  teacher, student = _log_softmax_at(logits, 1.0), _log_softmax_at(logits + 3.0, 1.0)
  today, ours = (
      jax.jit(jax.value_and_grad(lambda s, fn=fn: jnp.sum(fn(teacher, s))))(student)
      for fn in (losses.kl_from_log_probs, divergences.lookup("forward_kl"))
  )
  np.testing.assert_array_equal(np.asarray(ours[1]), np.asarray(today[1]))
  np.testing.assert_allclose(float(ours[0]), max(float(today[0]), 0.0), rtol=0.0, atol=ATOL)
  assert float(ours[0]) >= 0.0


def test_elementwise_forms_sum_to_the_divergences():
  rng = np.random.default_rng(3)
  teacher, student = _log_softmax_at(jnp.asarray(_logits(rng)), 1.0), _log_softmax_at(jnp.asarray(_logits(rng)), 1.0)
  terms = jax.jit(lambda t, s: jnp.stack([divergences.DIVERGENCES[n].elementwise(t, s, param=p) for n, p in CASES]))(
      teacher, student
  )
  assert terms.shape == (len(CASES), B, S, V)
  np.testing.assert_allclose(
      np.asarray(jnp.sum(terms, axis=-1)), np.asarray(_all_values(teacher, student)), rtol=1e-6, atol=1e-7
  )


def test_student_partials_give_the_logit_gradient():
  """The tiled backward's formula: dD/dz = (g - q sum g) / T, g the elementwise form's diagonal partials."""
  rng = np.random.default_rng(4)
  teacher_logits, student_logits = _logits(rng), _logits(rng)
  temperature = 2.0

  @jax.jit
  def via_partials(z):
    teacher, student = _log_softmax_at(teacher_logits, temperature), _log_softmax_at(z, temperature)
    out = []
    for name, param in CASES:
      elementwise = divergences.DIVERGENCES[name].elementwise
      terms, partials = divergences.student_partials(elementwise, teacher, student, param=param)
      grad = (partials - jnp.exp(student) * jnp.sum(partials, axis=-1, keepdims=True)) / temperature
      out.append((terms - elementwise(teacher, student, param=param), grad))
    return out

  for case, (terms_diff, grad) in zip(CASES, via_partials(jnp.asarray(student_logits))):
    np.testing.assert_array_equal(np.asarray(terms_diff), 0.0, err_msg=_case_id(case))
    want = _np_student_grad(case[0], teacher_logits, student_logits, temperature, case[1], np.ones((B, S)))
    atol = GRAD_ATOL * max(1.0, np.abs(want).max())
    np.testing.assert_allclose(np.asarray(grad), want, rtol=GRAD_RTOL, atol=atol, err_msg=_case_id(case))


# ----------------------------------------------------------------------------- limits


def test_identical_distributions_give_zero_and_zero_gradient():
  rng = np.random.default_rng(5)
  logits = _logits(rng, "peaked")
  # A per-token constant leaves the distribution unchanged, up to float32 rounding of the log-softmax.
  shift = rng.standard_normal((B, S, 1)).astype(np.float32)
  for temperature in TEMPERATURES:
    for student, rounded in ((logits, False), (logits + shift, True)):
      values, grads = _all_values_and_grads(logits, student, jnp.float32(temperature), _ones())
      for case, value, grad in zip(CASES, np.asarray(values), np.asarray(grads)):
        message = f"{_case_id(case)} T={temperature} shifted={rounded}"
        assert value >= 0.0, message
        np.testing.assert_allclose(value, 0.0, atol=ATOL, err_msg=message)
        # TVD has no derivative at p = q; JAX's |x| gives the subgradient 0 there, but rounding noise
        # of either sign picks +-q_v, as it would in any TVD implementation.
        if not (rounded and case[0] == "tvd"):
          np.testing.assert_allclose(grad, 0.0, atol=ATOL, err_msg=message)


def _value_and_grad(fn, teacher_logp, student_logits, temperature=1.0):
  return jax.jit(jax.value_and_grad(lambda z: jnp.sum(fn(teacher_logp, _log_softmax_at(z, temperature)))))(
      jnp.asarray(student_logits)
  )


def _logps(seed=6, kind="random", temperature=1.0):
  rng = np.random.default_rng(seed)
  teacher, student = _logits(rng, kind), _logits(rng, kind)
  return teacher, student, _log_softmax_at(teacher, temperature), _log_softmax_at(student, temperature)


ENDPOINTS = (
    # (divergence, parameter at the endpoint, the plain KL it must equal exactly)
    ("jsd", 0.0, "forward_kl"),
    ("jsd", 1.0, "reverse_kl"),
    ("skew_kl", 0.0, "forward_kl"),
    ("skew_reverse_kl", 0.0, "reverse_kl"),
)


@pytest.mark.parametrize("traced", (False, True), ids=("python_param", "traced_param"))
def test_endpoints_are_the_plain_kls(traced):
  """Exactly (values and gradients) for a Python parameter; a traced one gives the same values, and
  gradients equal up to float32 rounding (its jnp.where-selected graph compiles differently)."""
  _, student_logits, teacher, _ = _logps(kind="peaked")

  @jax.jit
  def pairs(z, params):
    out = []
    for (name, _, plain), value in zip(ENDPOINTS, params if traced else [e[1] for e in ENDPOINTS]):
      entry, want_entry = divergences.DIVERGENCES[name], divergences.DIVERGENCES[plain]
      student = _log_softmax_at(z, 1.0)
      out.append((
          jax.value_and_grad(lambda z, e=entry, v=value: jnp.sum(e(teacher, _log_softmax_at(z, 1.0), param=v)))(z),
          jax.value_and_grad(lambda z, e=want_entry: jnp.sum(e(teacher, _log_softmax_at(z, 1.0))))(z),
          entry.elementwise(teacher, student, param=value) - want_entry.elementwise(teacher, student),
      ))
    return out

  results = pairs(jnp.asarray(student_logits), jnp.asarray([e[1] for e in ENDPOINTS], jnp.float32))
  for (name, param, plain), ((value, grad), (want_value, want_grad), terms_diff) in zip(ENDPOINTS, results):
    message = f"{name}({param}) vs {plain}"
    np.testing.assert_array_equal(np.asarray(value), np.asarray(want_value), err_msg=message)
    np.testing.assert_array_equal(np.asarray(terms_diff), 0.0, err_msg=message)
    if traced:
      np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=message)
    else:
      np.testing.assert_array_equal(np.asarray(grad), np.asarray(want_grad), err_msg=message)


def test_jsd_near_the_endpoints_keeps_its_value_and_tends_to_the_kls():
  """JSD(beta) ~ beta KL(p||q) near 0 and (1 - beta) KL(q||p) near 1: no spurious collapse to 0 in float32."""
  teacher_logits, student_logits, teacher, student = _logps(seed=7)
  for beta in (1e-4, 1.0 - 1e-4):
    got = np.asarray(jax.jit(lambda t, s, beta=beta: divergences.lookup("jsd")(t, s, param=beta))(teacher, student))
    want = _np_from_logits("jsd", teacher_logits, student_logits, 1.0, beta)
    # The log-space mixture's float32 error is ~1e-7 absolute, a few 1e-4 of a value of ~1e-4 (3e-4 measured).
    np.testing.assert_allclose(got, want, rtol=2e-3, err_msg=f"beta={beta}")
    plain, scale = ("forward_kl", beta) if beta < 0.5 else ("reverse_kl", 1.0 - beta)
    kl = _np_from_logits(plain, teacher_logits, student_logits, 1.0, None)
    # First-order behaviour, checked on the reference too; the O(beta) correction is < 2% on these logits.
    np.testing.assert_allclose(want / scale, kl, rtol=2e-2)
    np.testing.assert_allclose(got / scale, kl, rtol=2e-2)


def test_traced_parameters_match_python_ones():
  _, _, teacher, student = _logps()
  traced = jax.jit(
      lambda t, s, params: jnp.stack(
          [divergences.DIVERGENCES[n](t, s, param=params[i]) for i, (n, _) in enumerate(CASES)]
      )
  )(teacher, student, jnp.asarray([p or 0.0 for _, p in CASES], jnp.float32))
  np.testing.assert_allclose(np.asarray(traced), np.asarray(_all_values(teacher, student)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ("random", "peaked"))
def test_bounds(kind):
  _, _, teacher, student = _logps(seed=8, kind=kind, temperature=0.5)
  for (name, param), value in zip(CASES, np.asarray(_all_values(teacher, student))):
    if name == "jsd":
      bound = -param * np.log(param) - (1 - param) * np.log1p(-param)  # binary entropy h(beta) <= log 2
    elif name.startswith("skew"):
      bound = -np.log(param)
    elif name == "tvd":
      bound = 1.0
    else:
      continue
    assert np.all(value <= bound + ATOL), (name, param, value.max(), bound)


# ----------------------------------------------------------------------------- dtypes and masking


def test_bf16_inputs_are_finite_non_negative_and_renormalised():
  rng = np.random.default_rng(9)
  for kind in ("random", "peaked"):
    teacher = _log_softmax_at(_logits(rng, kind), 1.0).astype(jnp.bfloat16)
    # A student close to the teacher: where rounding would push an unnormalised divergence below 0.
    student = _log_softmax_at(_logits(rng, kind) * 0.01 + np.asarray(teacher, np.float32), 1.0).astype(jnp.bfloat16)
    for t, s in ((teacher, student), (teacher, teacher)):
      got = np.asarray(_all_values(t, s))
      assert got.dtype == np.float32
      # Reference: the bf16 log-probabilities' own distributions, renormalised in float64.
      logp, logq = (ref.log_softmax(np.asarray(x, np.float64)) for x in (t, s))
      for case, value in zip(CASES, got):
        assert np.all(np.isfinite(value)) and np.all(value >= 0.0), (_case_id(case), kind, value.min())
        np.testing.assert_allclose(value, ref.divergence(case[0], logp, logq, case[1]), rtol=RTOL, atol=ATOL)


# -inf masking, and the finite stand-in the tiled losses put on padded vocabulary columns.
@pytest.mark.parametrize("padding", (-np.inf, -1e30), ids=("neg_inf", "finite_padding"))
def test_masked_vocabulary_equals_slicing(padding):
  """Columns masked in both models (vocabulary padding) contribute 0, with zero, finite gradients."""
  rng = np.random.default_rng(10)
  teacher, student = _logits(rng), _logits(rng)
  masked = np.zeros(V, bool)
  masked[[0, 4, V - 1]] = True
  padded_t, padded_s = (np.where(masked, padding, x).astype(np.float32) for x in (teacher, student))
  teacher_grads = jax.jit(
      lambda t, s: jnp.stack(
          [jax.grad(lambda t, n=n, p=p: jnp.sum(divergences.DIVERGENCES[n](t, s, param=p)))(t) for n, p in CASES]
      )
  )
  sliced_t, sliced_s = teacher[..., ~masked], student[..., ~masked]
  for temperature in TEMPERATURES:
    temp = jnp.float32(temperature)
    values, grads = _all_values_and_grads(padded_t, padded_s, temp, _ones())
    t_grads = teacher_grads(_log_softmax_at(padded_t, temp), _log_softmax_at(padded_s, temp))
    for i, (name, param) in enumerate(CASES):
      message = f"{_case_id((name, param))} T={temperature}"
      want = np.sum(_np_from_logits(name, sliced_t, sliced_s, temperature, param))
      np.testing.assert_allclose(float(values[i]), want, rtol=RTOL, atol=ATOL, err_msg=message)
      grad = np.asarray(grads[i])
      assert np.all(np.isfinite(grad)) and np.all(np.isfinite(np.asarray(t_grads[i]))), message
      np.testing.assert_array_equal(grad[..., masked], 0.0, err_msg=message)
      want = _np_student_grad(name, sliced_t, sliced_s, temperature, param, np.ones((B, S)))
      atol = GRAD_ATOL * max(1.0, np.abs(want).max())
      np.testing.assert_allclose(grad[..., ~masked], want, rtol=GRAD_RTOL, atol=atol, err_msg=message)


@pytest.mark.parametrize("side", ("teacher", "student"))
def test_one_model_forbidding_tokens(side):
  """Finite where the math is (mixtures, TVD, the KL whose reference side is positive); +inf, not NaN, elsewhere."""
  rng = np.random.default_rng(11)
  teacher, student = _logits(rng), _logits(rng)
  (teacher if side == "teacher" else student)[..., :3] = -np.inf
  values, grads = _all_values_and_grads(teacher, student, jnp.float32(1.0), _ones())
  infinite = "reverse_kl" if side == "teacher" else "forward_kl"
  for case, value, grad in zip(CASES, np.asarray(values), np.asarray(grads)):
    if case[0] == infinite:
      assert value == np.inf, _case_id(case)
      continue
    assert np.isfinite(value) and np.all(np.isfinite(grad)), _case_id(case)
    want = np.sum(_np_from_logits(case[0], teacher, student, 1.0, case[1]))
    np.testing.assert_allclose(value, want, rtol=RTOL, err_msg=_case_id(case))


def test_bucketed_divergence_is_a_lower_bound_and_exact_at_k_equals_v():
  """Data processing: the k+1-bucket value (top-k ids and one tail) <= the full one; k = V gives it exactly."""
  _, _, teacher, student = _logps(seed=12)
  order = jnp.argsort(-teacher, axis=-1)
  ranked_t, ranked_s = (jnp.take_along_axis(x, order, axis=-1) for x in (teacher, student))
  full = np.asarray(_all_values(teacher, student))
  np.testing.assert_allclose(np.asarray(_all_values(ranked_t, ranked_s)), full, rtol=1e-6, atol=1e-7)
  for k in (1, 4, V - 2):
    # The k+1 buckets, padded to V with -inf columns (which contribute exactly 0, tested above) to keep one shape.
    padding = jnp.full((B, S, V - k - 1), -jnp.inf)
    buckets = [
        jnp.concatenate([x[..., :k], jax.nn.logsumexp(x[..., k:], axis=-1, keepdims=True), padding], axis=-1)
        for x in (ranked_t, ranked_s)
    ]
    bucketed = np.asarray(_all_values(*buckets))
    for case, low, high in zip(CASES, bucketed, full):
      assert np.all(low <= high + ATOL), (_case_id(case), k)
      if case[0] != "tvd":  # strictly convex f: strict, as the tail's ratios p/q are not constant here
        assert np.all(low < high), (_case_id(case), k)


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_parameters():
  params = {name: (entry.name, entry.param, entry.default) for name, entry in divergences.DIVERGENCES.items()}
  assert params == {
      "forward_kl": ("forward_kl", None, None),
      "reverse_kl": ("reverse_kl", None, None),
      "jsd": ("jsd", "beta", 0.5),
      "skew_kl": ("skew_kl", "lambda", 0.1),
      "skew_reverse_kl": ("skew_reverse_kl", "lambda", 0.1),
      "tvd": ("tvd", None, None),
  }
  _, _, teacher, student = _logps()
  # A call without a parameter uses the default.
  for name, default in (("jsd", 0.5), ("skew_kl", 0.1), ("tvd", None)):
    np.testing.assert_array_equal(
        np.asarray(divergences.DIVERGENCES[name](teacher, student)),
        np.asarray(divergences.DIVERGENCES[name](teacher, student, param=default)),
    )


@pytest.mark.parametrize(
    "name,value,want",
    (
        ("jsd", None, 0.5),
        ("jsd", 0, 0.0),
        ("jsd", 1, 1.0),
        ("jsd", 0.25, 0.25),
        ("skew_kl", None, 0.1),
        ("skew_kl", 0.0, 0.0),
        ("skew_reverse_kl", 0.5, 0.5),
        ("forward_kl", None, None),
        ("tvd", None, None),
    ),
)
def test_check_param_accepts(name, value, want):
  assert divergences.DIVERGENCES[name].check_param(value) == want


@pytest.mark.parametrize(
    "name,value,message",
    (
        ("jsd", -0.1, r"jsd needs beta in \[0, 1\], got -0.1"),
        ("jsd", 1.5, r"jsd needs beta in \[0, 1\], got 1.5"),
        ("jsd", float("nan"), r"jsd needs beta in \[0, 1\], got nan"),
        ("jsd", "0.5", r"jsd needs beta in \[0, 1\], got '0.5'"),
        ("jsd", True, r"jsd needs beta in \[0, 1\], got True"),
        ("skew_kl", 1.0, r"skew_kl needs lambda in \[0, 1\), got 1.0"),
        ("skew_reverse_kl", -1.0, r"skew_reverse_kl needs lambda in \[0, 1\), got -1.0"),
        ("forward_kl", 0.5, "forward_kl takes no parameter, got 0.5"),
        ("tvd", 0.1, "tvd takes no parameter, got 0.1"),
    ),
)
def test_check_param_refuses(name, value, message):
  with pytest.raises(ValueError, match=message):
    divergences.DIVERGENCES[name].check_param(value)


def test_lookup():
  assert divergences.lookup("jsd") is divergences.DIVERGENCES["jsd"]
  with pytest.raises(ValueError, match="unknown divergence 'kl'; registered: forward_kl, reverse_kl, jsd, skew_kl"):
    divergences.lookup("kl")
