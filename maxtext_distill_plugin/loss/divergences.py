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

"""Divergences between a teacher and a student distribution, per token: pure, jit-able, no reduction.

Inputs are log-probabilities ``[..., V]`` at the distillation temperature T (already
log-softmaxed; T and the T^2 factor belong to the caller); ``p = exp(teacher_logp)``,
``q = exp(student_logp)``. Each divergence is written once, as an *elementwise* form
``e(teacher_logp, student_logp, *, param) -> [..., V]`` whose sum over the last axis is the
divergence ``[...]``. The dense, tiled and top-k paths share that one formula:

* dense: ``sum_v e_v`` over the vocabulary (a registered :class:`Divergence` called on two distributions);
* tiled: ``sum_v e_v`` accumulated tile by tile; the student gradient needs only the
  diagonal ``g_v = de_v / d student_logp_v`` (:func:`student_partials`), because
  ``dD / dz_v = (g_v - q_v sum_u g_u) / T`` through ``student_logp = z / T - lse(z / T)``;
* offline top-k: ``e`` over k+1 buckets (the teacher's k ids and one tail bucket). Every
  divergence here is an f-divergence ``D_f(P || Q) = sum_v q_v f(p_v / q_v)``, and merging
  outcomes can only lower an f-divergence (data processing), so the bucketed value is a lower
  bound of the full one: exact when ``p / q`` is constant inside the tail (for TVD: when
  ``p - q`` has one sign there), always when k = V. This holds for the exact teacher tail mass
  (T = 1); a re-tempered tail (T != 1) is itself an approximation.

Mixtures are formed in log space (``logaddexp``). Vocabulary entries where both
distributions are zero (``-inf`` masked logits) contribute exactly 0 with zero, NaN-free
gradients: every log that could be ``-inf`` is replaced before it enters an arithmetic
op whose derivative would meet ``0 * inf``. Where only the *reference* distribution of a
KL vanishes, the divergence is genuinely ``+inf`` (reverse KL where the teacher forbids a
token the student allows); the mixtures of JSD and the skew KLs (lambda > 0) stay finite.

bf16/fp16 inputs are promoted to float32 and renormalised there (rounded log-probabilities
do not sum to one, which is how a bf16 teacher makes JSD negative); float32 and wider
inputs are used as given. Every sum is clamped at 0 straight-through: the value never rounds
below 0, and the gradient stays the exact gradient of the unclamped sum (accurate even where
the value is rounding noise, so a nearly converged token keeps its gradient). Forward KL is
thus :func:`maxtext_distill_plugin.loss.losses.kl_from_log_probs` bit for bit wherever that is >= 0,
with the same gradient everywhere.

References:
  Hinton, Vinyals, Dean (2015). Distilling the Knowledge in a Neural Network. arXiv:1503.02531.
  Csiszar (1967). Information-Type Measures of Difference of Probability Distributions and Indirect
    Observations. Studia Sci. Math. Hungarica 2 (f-divergences; coarse-graining cannot increase them).
"""

import dataclasses
import numbers
from typing import Callable

import jax
import jax.numpy as jnp

# Traced beta / lambda are clipped into [_EDGE, 1 - _EDGE] for the interior formula; the
# endpoints themselves are selected exactly. 2^-24 is the float32 spacing just below 1.
_EDGE = 2.0**-24


def _as_float(logp: jnp.ndarray) -> jnp.ndarray:
  return logp.astype(jnp.promote_types(logp.dtype, jnp.float32))


def _kl_terms(log_a: jnp.ndarray, log_b: jnp.ndarray) -> jnp.ndarray:
  """``a_v (log a_v - log b_v)``, 0 where ``a_v = 0``; both logs are masked there so no ``0 * inf`` reaches a VJP."""
  a = jnp.exp(log_a)
  support = a > 0
  return jnp.where(support, a * (jnp.where(support, log_a, 0.0) - jnp.where(support, log_b, 0.0)), 0.0)


def _log_mixture(teacher_logp, student_logp, teacher_weight) -> jnp.ndarray:
  """``log(w p + (1 - w) q)`` elementwise; entries with ``p = q = 0`` become 0 (never read, NaN-free VJP)."""
  either = (teacher_logp > -jnp.inf) | (student_logp > -jnp.inf)
  return jnp.logaddexp(
      jnp.where(either, teacher_logp + jnp.log(teacher_weight), 0.0),
      jnp.where(either, student_logp + jnp.log1p(-teacher_weight), 0.0),
  )


def _with_endpoints(param, interior: Callable, endpoints: dict[float, Callable]) -> jnp.ndarray:
  """``endpoints[param]()`` at an endpoint, else ``interior(param)``: one traced branch for a Python number."""
  if isinstance(param, numbers.Real):
    value = float(param)
    return endpoints[value]() if value in endpoints else interior(value)
  param = jnp.asarray(param, jnp.float32)
  out = interior(jnp.clip(param, _EDGE, 1.0 - _EDGE))
  for value, branch in endpoints.items():
    out = jnp.where(param == value, branch(), out)
  return out


# ----------------------------------------------------------------------------- elementwise forms [..., V]


def forward_kl_elementwise(teacher_logp, student_logp, *, param=None) -> jnp.ndarray:
  """``p_v (log p_v - log q_v)``: ``KL(p || q)``, mass-covering, the classic distillation loss; ``param`` is unused.

  ``+inf`` where ``q_v = 0 < p_v``.

  References:
    Hinton, Vinyals, Dean (2015). Distilling the Knowledge in a Neural Network. arXiv:1503.02531.
  """
  del param
  return _kl_terms(_as_float(teacher_logp), _as_float(student_logp))


def reverse_kl_elementwise(teacher_logp, student_logp, *, param=None) -> jnp.ndarray:
  """``q_v (log q_v - log p_v)``: ``KL(q || p)``, mode-seeking; ``+inf`` where ``p_v = 0 < q_v``; ``param`` is unused.

  References:
    Gu, Dong, Wei, Huang (2024). MiniLLM: Knowledge Distillation of Large Language Models. arXiv:2306.08543.
  """
  del param
  return _kl_terms(_as_float(student_logp), _as_float(teacher_logp))


def jsd_elementwise(teacher_logp, student_logp, *, param) -> jnp.ndarray:
  """Generalized Jensen-Shannon divergence JSD(beta), GKD's convention, with exact KL endpoints.

  For ``0 < beta < 1``, with the mixture ``m = beta p + (1 - beta) q`` (formed as ``logaddexp``), the terms
  ``beta p_v log(p_v / m_v) + (1 - beta) q_v log(q_v / m_v)``, summing to

    JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m),   0 <= JSD(beta) <= h(beta) <= log 2,

  ``h`` the binary entropy; beta = 0.5 is the classic JSD. At the endpoints this formula is 0
  (``m`` equals one of the two), so the endpoints are defined separately and exactly:
  ``JSD(0) = KL(p || q)`` (forward) and ``JSD(1) = KL(q || p)`` (reverse), as in GKD and TRL.

  Why branches and not a rescaling: near the endpoints ``JSD(beta) = beta KL(p || q) + O(beta^2)``
  and ``(1 - beta) KL(q || p) + O((1 - beta)^2)``, so ``JSD(beta) / (beta (1 - beta))`` would be
  continuous on [0, 1], but it is not GKD's JSD: it would scale the loss by 4 at beta = 0.5 and
  change every number reported against GKD and TRL. We keep GKD's values in the interior (with no
  ``0 log 0`` and no spurious collapse to 0 near the endpoints: ``JSD(beta) / beta`` does tend to
  the forward KL in float32) and select the endpoint KLs exactly. The value is therefore
  discontinuous at 0 and 1 by the factor beta (resp. 1 - beta), as GKD's is. A Python ``beta``
  traces only the branch that runs; a traced one is compared with 0 and 1, and clipped to
  ``[2^-24, 1 - 2^-24]`` for the interior. Finite wherever ``p`` or ``q`` is positive, for 0 < beta < 1.

  References:
    Agarwal et al. (2024). On-Policy Distillation of Language Models: Learning from Self-Generated
      Mistakes (GKD). arXiv:2306.13649.
    Huszar (2015). How (not) to Train your Generative Model: Scheduled Sampling, Likelihood,
      Adversary? arXiv:1511.05101.
    Lin (1991). Divergence Measures Based on the Shannon Entropy. IEEE Trans. Inf. Theory 37(1).
  """
  t, s = _as_float(teacher_logp), _as_float(student_logp)

  def interior(beta):
    log_m = _log_mixture(t, s, beta)
    return beta * _kl_terms(t, log_m) + (1.0 - beta) * _kl_terms(s, log_m)

  return _with_endpoints(param, interior, {0.0: lambda: _kl_terms(t, s), 1.0: lambda: _kl_terms(s, t)})


def skew_kl_elementwise(teacher_logp, student_logp, *, param) -> jnp.ndarray:
  """``p_v log(p_v / m_v)``, ``m = lambda p + (1 - lambda) q``: skew forward KL, in ``[0, -log lambda]``.

  The mixture bounds the log-ratio by ``-log lambda`` where ``q`` vanishes (finite where the forward
  KL is not), which is what stabilises DistiLLM's optimisation. ``lambda = 0`` selects the forward
  KL's terms exactly; DistiLLM uses 0.1.

  References:
    Ko, Kim, Chen, Yun (2024). DistiLLM: Towards Streamlined Distillation for Large Language Models.
      arXiv:2402.03898.
    Lee (1999). Measures of Distributional Similarity. ACL (the skew divergence).
  """
  t, s = _as_float(teacher_logp), _as_float(student_logp)
  return _with_endpoints(param, lambda lam: _kl_terms(t, _log_mixture(t, s, lam)), {0.0: lambda: _kl_terms(t, s)})


def skew_reverse_kl_elementwise(teacher_logp, student_logp, *, param) -> jnp.ndarray:
  """``q_v log(q_v / m_v)``, ``m = lambda q + (1 - lambda) p``: skew reverse KL, in ``[0, -log lambda]``;
  ``lambda = 0`` is reverse KL.

  References:
    Ko, Kim, Chen, Yun (2024). DistiLLM: Towards Streamlined Distillation for Large Language Models.
      arXiv:2402.03898.
  """
  t, s = _as_float(teacher_logp), _as_float(student_logp)
  return _with_endpoints(param, lambda lam: _kl_terms(s, _log_mixture(s, t, lam)), {0.0: lambda: _kl_terms(s, t)})


def tvd_elementwise(teacher_logp, student_logp, *, param=None) -> jnp.ndarray:
  """``|p_v - q_v| / 2``: total variation distance, in [0, 1] (a probability); ``param`` is unused.

  Not differentiable where ``p_v = q_v``; JAX's subgradient of ``|x|`` there is 0.

  References:
    Wen, Li, Du, Mou (2023). f-Divergence Minimization for Sequence-Level Knowledge Distillation.
      arXiv:2307.15190.
  """
  del param
  return 0.5 * jnp.abs(jnp.exp(_as_float(teacher_logp)) - jnp.exp(_as_float(student_logp)))


# ----------------------------------------------------------------------------- per-token divergences [...]


def _normalised(logp: jnp.ndarray) -> jnp.ndarray:
  """float32 (or wider) log-probabilities; sub-float32 inputs are renormalised after promotion."""
  if jnp.finfo(logp.dtype).bits < 32:
    return jax.nn.log_softmax(logp.astype(jnp.float32), axis=-1)
  return _as_float(logp)


def _nonnegative(total: jnp.ndarray) -> jnp.ndarray:
  """``max(total, 0)`` in value, the unclamped gradient (straight-through; ``+inf`` stays ``+inf``)."""
  return total + jax.lax.stop_gradient(jnp.where(total < 0.0, -total, 0.0))


def _reduce(elementwise: Callable, teacher_logp, student_logp, param) -> jnp.ndarray:
  """``sum_v e_v`` over the last axis, clamped at 0 (straight-through)."""
  return _nonnegative(jnp.sum(elementwise(_normalised(teacher_logp), _normalised(student_logp), param=param), axis=-1))


def student_partials(elementwise: Callable, teacher_logp, student_logp, *, param=None):
  """``(e_v, de_v / d student_logp_v)``, both ``[..., V]``, of an elementwise form in one forward-mode pass.

  The form is diagonal in the student, so a JVP with a tangent of ones gives exactly the
  diagonal of its Jacobian; a tiled backward combines it as ``(g_v - q_v sum_u g_u) / T``.
  """
  teacher_logp, student_logp = _as_float(teacher_logp), _as_float(student_logp)
  return jax.jvp(lambda s: elementwise(teacher_logp, s, param=param), (student_logp,), (jnp.ones_like(student_logp),))


# ----------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Divergence:
  """One registered divergence: its elementwise form, its per-token sum and its extra parameter.

  Attributes:
    name: the ``distill_divergence`` value that selects it.
    elementwise: ``(teacher_logp, student_logp, *, param) -> [..., V]``.
    param: name of the extra parameter (``"beta"``, ``"lambda"``) or None.
    default: that parameter's default, or None.
    allows_one: whether the parameter may equal 1 (JSD: reverse KL; skew: a zero divergence, refused).
  """

  name: str
  elementwise: Callable[..., jnp.ndarray]
  param: str | None = None
  default: float | None = None
  allows_one: bool = False

  def __call__(self, teacher_logp, student_logp, *, param=None) -> jnp.ndarray:
    """The per-token divergence ``[...]``: ``sum_v`` of the elementwise form, clamped at 0 (the default parameter
    when ``param`` is None)."""
    return _reduce(self.elementwise, teacher_logp, student_logp, self.default if param is None else param)

  def check_param(self, value) -> float | None:
    """``value`` as a float (the default when None), or ValueError naming the valid range."""
    if self.param is None:
      if value is not None:
        raise ValueError(f"{self.name} takes no parameter, got {value!r}")
      return None
    if value is None:
      return self.default
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (number and 0.0 <= value and (value <= 1.0 if self.allows_one else value < 1.0)):  # NaN fails too
      raise ValueError(f"{self.name} needs {self.param} in [0, {'1]' if self.allows_one else '1)'}, got {value!r}")
    return float(value)


DIVERGENCES: dict[str, Divergence] = {
    entry.name: entry
    for entry in (
        Divergence("forward_kl", forward_kl_elementwise),
        Divergence("reverse_kl", reverse_kl_elementwise),
        Divergence("jsd", jsd_elementwise, "beta", 0.5, allows_one=True),
        Divergence("skew_kl", skew_kl_elementwise, "lambda", 0.1),
        Divergence("skew_reverse_kl", skew_reverse_kl_elementwise, "lambda", 0.1),
        Divergence("tvd", tvd_elementwise),
    )
}


def lookup(name: str) -> Divergence:
  """The registered divergence called ``name``, or ValueError listing the registered names."""
  if name not in DIVERGENCES:
    raise ValueError(f"unknown divergence {name!r}; registered: {', '.join(DIVERGENCES)}")
  return DIVERGENCES[name]
