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
ids plus one tail bucket, or the k ids renormalised), and the diagnostics. Inputs are arrays ``[..., V]``;
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
