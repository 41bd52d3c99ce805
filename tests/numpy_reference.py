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

"""Float64 NumPy references of the distillation losses, written from the formulas (independent of the plugin).

Every divergence as a per-token sum over outcomes, dense (the V tokens) and bucketed (a cached teacher's k
ids plus one tail bucket, or the k ids renormalised), the diagnostics, the teachers' mixture, and the lean loss with
its per-divergence partials and analytic gradient. Inputs are arrays ``[..., V]``;
outputs ``[...]``. Used by the unit tests of every loss path.
"""

import numpy as np

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd")
DEFAULT_PARAMS = {"jsd": 0.5, "skew_kl": 0.1, "skew_reverse_kl": 0.1}
STUDENT_TAIL_FLOOR = 2.0**-23


def log_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  shifted = x - np.max(x, axis=axis, keepdims=True)
  return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def logsumexp(x, axis=-1):
  x = np.asarray(x, np.float64)
  top = np.max(x, axis=axis, keepdims=True)
  return (top + np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)))[..., 0]


def _xlogy_ratio(a, b):
  """``a log(a / b)`` elementwise, 0 where ``a = 0``."""
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(a > 0, a * (np.log(np.where(a > 0, a, 1.0)) - np.log(b)), 0.0)


def divergence(name, teacher_logp, student_logp, param=None):
  """``D(p, q)`` summed over the last axis, from log-probabilities ``log p`` (teacher) and ``log q`` (student)."""
  p, q = np.exp(np.asarray(teacher_logp, np.float64)), np.exp(np.asarray(student_logp, np.float64))
  param = DEFAULT_PARAMS.get(name) if param is None else param
  if name == "forward_kl" or (name in ("jsd", "skew_kl") and param == 0.0):
    terms = _xlogy_ratio(p, q)
  elif name == "reverse_kl" or (name == "skew_reverse_kl" and param == 0.0) or (name == "jsd" and param == 1.0):
    terms = _xlogy_ratio(q, p)
  elif name == "jsd":  # beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q
    m = param * p + (1.0 - param) * q
    terms = param * _xlogy_ratio(p, m) + (1.0 - param) * _xlogy_ratio(q, m)
  elif name == "skew_kl":  # KL(p || lam p + (1 - lam) q)
    terms = _xlogy_ratio(p, param * p + (1.0 - param) * q)
  elif name == "skew_reverse_kl":  # KL(q || lam q + (1 - lam) p)
    terms = _xlogy_ratio(q, param * q + (1.0 - param) * p)
  elif name == "tvd":
    terms = 0.5 * np.abs(p - q)
  else:
    raise ValueError(name)
  return np.sum(terms, axis=-1)


def dense_divergence(name, teacher_logits, student_logits, temperature, param=None):
  """The divergence at T of two models' full logits ``[..., V]``."""
  return divergence(
      name,
      log_softmax(np.asarray(teacher_logits) / temperature),
      log_softmax(np.asarray(student_logits) / temperature),
      param,
  )


def cross_entropy(logits, labels):
  """``-log softmax(z)[label]`` per token."""
  return -np.take_along_axis(log_softmax(logits), np.asarray(labels)[..., None], axis=-1)[..., 0]


def entropy(logp):
  p = np.exp(np.asarray(logp, np.float64))
  return -np.sum(np.where(p > 0, p * np.asarray(logp, np.float64), 0.0), axis=-1)


def topk_cache(teacher_logits, k):
  """What a k-cache stores of a teacher: ``(ids [..., k], log p at T=1 [..., k], tail log-mass [...])``."""
  logp = log_softmax(teacher_logits)
  ids = np.argsort(-logp, axis=-1, kind="stable")[..., :k]
  at_ids = np.take_along_axis(logp, ids, axis=-1)
  rest = logp.copy()
  np.put_along_axis(rest, ids, -np.inf, axis=-1)
  with np.errstate(divide="ignore"):
    tail = np.log(np.sum(np.exp(rest), axis=-1))
  return ids, at_ids, tail


def teacher_buckets(logprobs, tail_logmass, temperature, vocab_size):
  """The tempered teacher over its k ids and the tail, a uniform tail assumed (cache format 1), ``[..., k+1]``
  (``[..., k]`` when k = V): ``P_i ~ p_i^(1/T)``, ``P_tail ~ (V - k) (m / (V - k))^(1/T)`` for tail mass m."""
  tau = 1.0 / temperature
  logprobs = np.asarray(logprobs, np.float64)
  k = logprobs.shape[-1]
  if k == vocab_size:
    return log_softmax(tau * logprobs)
  tail = tau * np.asarray(tail_logmass, np.float64) + (1.0 - tau) * np.log(vocab_size - k)
  return log_softmax(np.concatenate([tau * logprobs, tail[..., None]], axis=-1))


def student_buckets(student_logits, ids, temperature):
  """The student at T over the teacher's ids and its own remaining mass (floored), ``[..., k+1]`` (k = V: k)."""
  logp = log_softmax(np.asarray(student_logits) / temperature)
  at_ids = np.take_along_axis(logp, ids, axis=-1)
  if ids.shape[-1] == logp.shape[-1]:
    return at_ids
  tail = np.log(np.maximum(1.0 - np.sum(np.exp(at_ids), axis=-1), STUDENT_TAIL_FLOOR))
  return np.concatenate([at_ids, tail[..., None]], axis=-1)


def sparse_divergence(name, cache, student_logits, temperature, tail, param=None):
  """The divergence at T against a cached top-k teacher: over the k+1 buckets, or the k ids renormalised."""
  ids, logprobs, tail_logmass = cache
  vocab = np.asarray(student_logits).shape[-1]
  if tail == "renormalize":
    teacher = log_softmax(np.asarray(logprobs, np.float64) / temperature)
    student = log_softmax(np.take_along_axis(np.asarray(student_logits, np.float64), ids, axis=-1) / temperature)
    return divergence(name, teacher, student, param)
  return divergence(
      name,
      teacher_buckets(logprobs, tail_logmass, temperature, vocab),
      student_buckets(student_logits, ids, temperature),
      param,
  )


def top1_agreement(teacher_top1_ids, student_logits):
  return (np.argmax(np.asarray(student_logits), axis=-1) == teacher_top1_ids).astype(np.float64)


def topk_mass(teacher_logits, k):
  logp = np.sort(log_softmax(teacher_logits), axis=-1)[..., ::-1]
  return np.sum(np.exp(logp[..., : min(k, logp.shape[-1])]), axis=-1)


def feature_distance_per_layer(student, teacher, loss_type):
  """``[L, ...]``: ``1 - cos`` or the mean squared difference over the last axis."""
  s, t = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
  if loss_type == "cosine":
    return 1.0 - np.sum(s * t, -1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
  return np.mean((s - t) ** 2, -1)


def finite_difference(fn, x, eps=1e-6):
  """Central differences of a scalar float64 ``fn`` at every entry of ``x``."""
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    plus, minus = x.copy(), x.copy()
    plus[index] += eps
    minus[index] -= eps
    grad[index] = (fn(plus) - fn(minus)) / (2 * eps)
  return grad


def mixture_log_probs(teacher_logits, weights, temperature):
  """``log sum_i w_i softmax(z_i / T)`` of K teachers' logits ``[K, ..., V]``: the per-token mixture, ``[..., V]``."""
  logp = np.stack([log_softmax(np.asarray(z, np.float64) / temperature) for z in teacher_logits])
  terms = logp + np.log(np.asarray(weights, np.float64)).reshape((-1,) + (1,) * (logp.ndim - 1))
  top = np.max(terms, axis=0)
  return top + np.log(np.sum(np.exp(terms - top), axis=0))


def distillation_objective(
    teacher_logp_T, student_logits, labels, mask, alpha, temperature, name="forward_kl", param=None
):
  """``sum over valid tokens of alpha T^2 D(p_T, q_T) + (1 - alpha) CE`` divided by their count (the spec's
  objective without features or z-loss), from the teacher's log-probabilities at T."""
  student = np.asarray(student_logits, np.float64)
  soft = divergence(name, teacher_logp_T, log_softmax(student / temperature), param) * temperature**2
  ce = -np.take_along_axis(log_softmax(student), np.asarray(labels)[..., None], axis=-1)[..., 0]
  per_token = alpha * soft + (1.0 - alpha) * ce
  mask = np.asarray(mask, np.float64)
  return np.sum(per_token * mask) / np.sum(mask)


# ----------------------------------------------------------------------------- the lean loss and its partials


def divergence_partials(name, teacher_logp, student_logp, param):
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


def lean_objective(inputs, *, alpha, temperature, divergence, param, softcaps=(None, None), z_loss=0.0, top_k=None):
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
      log_softmax(zs / temperature),
      log_softmax(zt / temperature),
      log_softmax(zs),
      log_softmax(zt),
  )
  e, g = divergence_partials(divergence, lt_t, ls_t, param)
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
