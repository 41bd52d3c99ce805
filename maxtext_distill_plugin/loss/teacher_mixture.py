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


"""The per-token mixture of several teachers' distributions: ``log p = log sum_i w_i p_i``, at each temperature.

Mixing distributions (not logits) keeps every teacher's confidence: where one teacher is sure and another is not, the
mixture puts its mass on the union of their likely tokens. At temperature T each teacher is softened first,
``p_i,T = softmax(z_i / T)``, then mixed, so the mixture at T = 1 and at T are two different distributions.
"""

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import losses


def mix(log_probs_KxBxSxV, weights) -> jnp.ndarray:
  """``log sum_i w_i exp(log_probs_i)`` over the leading axis, ``[B, S, V]``; ``weights`` a static tuple."""
  log_weights = jnp.log(jnp.asarray(weights, jnp.float32)).reshape((-1,) + (1,) * (log_probs_KxBxSxV.ndim - 1))
  return jax.nn.logsumexp(log_probs_KxBxSxV + log_weights, axis=0)


def dense_log_probs(mixture, temperature) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The mixture's log-probabilities at T and (gradient-stopped) at 1 from its members' logits ``[B, S, V]``."""
  logits = [member.logits_BxSxV for member in mixture.members]
  at_T = mix(jnp.stack([losses.log_softmax_at(z, temperature) for z in logits]), mixture.weights)
  at_1 = mix(jnp.stack([losses.log_softmax_at(z, 1.0) for z in logits]), mixture.weights)
  return at_T, jax.lax.stop_gradient(at_1)
