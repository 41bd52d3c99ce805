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

"""Shared by the lean-loss tests: value and gradients of an objective, and the lean-vs-dense comparison."""

import jax
import jax.numpy as jnp
import numpy as np

VALUE_RTOL, VALUE_ATOL = 1e-5, 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6


def value_and_grads(fn, inputs, weights):
  """Jitted ``(objective_sum, count, metrics)`` of ``fn`` and d objective_sum / d (student hidden, unembed, features)."""

  def objective_sum(student_hidden, student_unembed, student_features):
    total, count, metrics = fn(student_hidden, student_unembed, student_features, inputs, weights)
    return total, (count, metrics)

  args = (inputs["student_hidden"], inputs["student_unembed"], inputs["student_features"])
  (total, (count, metrics)), grads = jax.jit(jax.value_and_grad(objective_sum, argnums=(0, 1, 2), has_aux=True))(
      *map(jnp.asarray, args)
  )
  return total, count, metrics, grads


def assert_same_objective(got, want, mask, metric_names):
  """``value_and_grads`` results agree: objective, token count, every (sum, count) metric, every gradient."""
  got_total, got_count, got_metrics, got_grads = got
  want_total, want_count, want_metrics, want_grads = want
  np.testing.assert_allclose(float(got_total), float(want_total), rtol=VALUE_RTOL, atol=VALUE_ATOL)
  assert float(got_count) == float(want_count) == float(mask.sum())
  assert set(got_metrics) == set(want_metrics) == set(metric_names)
  for name in metric_names:
    np.testing.assert_allclose(
        float(got_metrics[name][0]), float(want_metrics[name][0]), rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=name
    )
    assert float(got_metrics[name][1]) == float(want_metrics[name][1]), name
  for label, got_grad, want_grad in zip(("hidden", "unembed", "features"), got_grads, want_grads):
    assert got_grad.shape == want_grad.shape and got_grad.dtype == want_grad.dtype, label
    np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=label)


# ----------------------------------------------------------------------------- float64 NumPy reference of the lean loss


def np_log_softmax(x):
  """float64 ``log softmax`` over the last axis."""
  shifted = x - x.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_divergence_partials(name, teacher_logp, student_logp, param):
  """``(e_v, de_v / dlog q_v)`` of each divergence, float64, from the textbook formulas (p, q > 0 assumed).

  The partials are derived by hand: for JSD(beta), ``d/dq [beta p log(p/m) + (1-beta) q log(q/m)]`` is
  ``(1-beta) log(q/m)``; for skew KL, ``d/dq p log(p/m) = -(1-lam) p / m``; for skew reverse KL,
  ``d/dq q log(q/m) = log(q/m) + 1 - lam q / m``; each times ``q`` for the derivative w.r.t. ``log q``.
  """
  logp, logq = teacher_logp, student_logp
  p, q = np.exp(logp), np.exp(logq)
  if name == "forward_kl" or (name == "jsd" and param == 0.0):
    return p * (logp - logq), -p
  if name == "reverse_kl" or (name == "jsd" and param == 1.0):
    return q * (logq - logp), q * (logq - logp) + q
  if name == "jsd":
    log_m = np.log(param * p + (1.0 - param) * q)
    return param * p * (logp - log_m) + (1.0 - param) * q * (logq - log_m), (1.0 - param) * q * (logq - log_m)
  if name == "skew_kl":
    m = param * p + (1.0 - param) * q
    return p * (logp - np.log(m)), -(1.0 - param) * p * q / m
  if name == "skew_reverse_kl":
    m = param * q + (1.0 - param) * p
    return q * (logq - np.log(m)), q * (logq - np.log(m) + 1.0 - param * q / m)
  if name == "tvd":
    return 0.5 * np.abs(p - q), 0.5 * q * np.sign(q - p)
  raise ValueError(name)


def np_lean_reference(inputs, *, alpha, temperature, divergence, param, softcaps=(None, None), z_loss=0.0, top_k=None):
  """float64 objective, metric sums and gradients of ``alpha T^2 D + (1 - alpha) CE + z lse^2`` on dense logits.

  ``logits = cap(hidden @ unembed)`` per model, ``D`` the divergence of the teacher's and the student's
  softmax at T (clamped at 0), summed over the valid tokens of ``inputs["mask"]``.

  Returns:
    ``(sums, count, (d_hidden, d_unembed))``: ``sums`` maps each metric name to its token sum.
  """
  f64 = {
      k: np.asarray(inputs[k], np.float64)
      for k in ("student_hidden", "student_unembed", "teacher_hidden", "teacher_unembed")
  }
  student_cap, teacher_cap = softcaps
  cap = lambda u, c: u if c is None else c * np.tanh(u / c)  # pylint: disable=unnecessary-lambda-assignment
  zs = cap(f64["student_hidden"] @ f64["student_unembed"], student_cap)
  zt = cap(f64["teacher_hidden"] @ f64["teacher_unembed"], teacher_cap)
  mask = np.asarray(inputs["mask"], np.float64)
  onehot = np.eye(zs.shape[-1])[np.asarray(inputs["labels"])]
  ls_t, lt_t, ls_1, lt_1 = (
      np_log_softmax(zs / temperature),
      np_log_softmax(zt / temperature),
      np_log_softmax(zs),
      np_log_softmax(zt),
  )
  e, g = np_divergence_partials(divergence, lt_t, ls_t, param)
  div = np.maximum(e.sum(-1), 0.0)
  lse_s = zs.max(-1) + np.log(np.exp(zs - zs.max(-1, keepdims=True)).sum(-1))
  ce_s, ce_t = -(onehot * ls_1).sum(-1), -(onehot * lt_1).sum(-1)
  per_token = alpha * temperature**2 * div + (1.0 - alpha) * ce_s + z_loss * lse_s**2
  q_t, q_1, p_1 = np.exp(ls_t), np.exp(ls_1), np.exp(lt_1)
  terms = {
      "distill/soft_loss": temperature**2 * div,
      "distill/hard_loss": ce_s,
      "distill/teacher_loss": ce_t,
      "distill/divergence_at_T": div,
      "distill/kl_div_at_T": (np.exp(lt_t) * (lt_t - ls_t)).sum(-1),
      "distill/kl_div_T1": (p_1 * (lt_1 - ls_1)).sum(-1),
      "distill/out_proj_feature_loss": np.zeros_like(div),
      "distill/total_loss": per_token,
      "distill/top1_agreement": (zs.argmax(-1) == zt.argmax(-1)).astype(np.float64),
      "distill/teacher_entropy": -(p_1 * lt_1).sum(-1),
      "distill/student_entropy": -(q_1 * ls_1).sum(-1),
  }
  if z_loss:
    terms["distill/z_loss"] = z_loss * lse_s**2
  if top_k is not None:
    terms["distill/topk_coverage"] = np.sort(p_1, axis=-1)[..., ::-1][..., :top_k].sum(-1)
  d_logits = alpha * temperature * (g - q_t * g.sum(-1, keepdims=True)) + (1.0 - alpha) * (q_1 - onehot)
  d_logits = (d_logits + 2.0 * z_loss * lse_s[..., None] * q_1) * mask[..., None]
  if student_cap is not None:
    d_logits = d_logits * (1.0 - (zs / student_cap) ** 2)
  d_hidden = d_logits @ f64["student_unembed"].T
  d_unembed = np.einsum("bsd,bsv->dv", f64["student_hidden"], d_logits)
  return {name: float((values * mask).sum()) for name, values in terms.items()}, float(mask.sum()), (d_hidden, d_unembed)
