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

"""MaxText's per-batch training terms (MoE load balance, multi-token prediction) in the token-summed objective.

The objective travels as a token *sum* and is divided once by the valid-token
count ``N`` of the whole batch (all micro-batches). A term ``a_i`` that MaxText
adds as a per-batch mean enters micro-batch ``i`` (``n_i`` valid tokens) as
``n_i * a_i``, so the step's loss is

  L = sum_tokens(per_token) / N + sum_i (n_i / N) * a_i.

With one micro-batch that is exactly MaxText's ``loss = xent / n + a``; with
gradient accumulation it is MaxText's own manual-accumulation weighting (its
``_add_aux_loss`` scales each micro-batch's term by ``n_i`` before the common
division), equal to the full-batch term whenever micro-batches hold equal token
counts (the mean of per-micro-batch router statistics is not the router
statistic of the whole batch, in MaxText as here).
"""

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import reductions

MOE_LB = metric_names.MOE_LB
TEACHER_MOE_LB = metric_names.TEACHER_MOE_LB
MTP = metric_names.MTP


def add_aux_terms(
    objective_sum: jnp.ndarray,
    count: jnp.ndarray,
    metrics: dict[str, reductions.SumCount],
    *,
    moe_lb_loss: jnp.ndarray | None = None,
    mtp_loss: jnp.ndarray | None = None,
    teacher_moe_lb_loss: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, reductions.SumCount]]:
  """Adds the student's scalar terms to a micro-batch's ``(objective_sum, count, metrics)``.

  Args:
    objective_sum: the micro-batch's token-summed objective (scalar).
    count: its valid-token count ``n_i`` (scalar).
    metrics: its (sum, count) metrics; ``distill/total_loss`` is updated.
    moe_lb_loss: the student's load-balance loss (scalar, weighted), or None; gradients flow.
    mtp_loss: the student's multi-token-prediction loss (scalar, scaled), or None; gradients flow.
    teacher_moe_lb_loss: the teacher's load-balance loss, a metric only (no gradient), or None.

  Returns:
    ``(objective_sum + n_i * (lb + mtp), count, metrics)``; each term is also a metric ``(n_i * a_i, n_i)``,
    whose ratio over micro-batches and steps is the token-weighted mean that entered the loss.
  """
  metrics = dict(metrics)
  terms = ((MOE_LB, moe_lb_loss, True), (MTP, mtp_loss, True), (TEACHER_MOE_LB, teacher_moe_lb_loss, False))
  for name, value, trains in terms:
    if value is None:
      continue
    weighted = jnp.asarray(value, jnp.float32) * count
    if trains:
      objective_sum = objective_sum + weighted
    else:
      weighted = jax.lax.stop_gradient(weighted)
    metrics[name] = (jax.lax.stop_gradient(weighted), count)
  metrics[metric_names.TOTAL_LOSS] = (jax.lax.stop_gradient(objective_sum), count)
  return objective_sum, count, metrics
