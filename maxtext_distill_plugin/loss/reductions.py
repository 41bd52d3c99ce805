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

"""Token-weighted reductions: every metric travels as a (sum, count) pair.

A mean of per-batch means is biased whenever batches hold different numbers of
valid tokens (padding, packing, uneven hosts). Keeping the sum and the count
separately and dividing once, after summing over micro-batches, hosts and
logging windows, gives the exact token mean.
"""

from typing import Mapping

import jax
import jax.numpy as jnp

SumCount = tuple[jnp.ndarray, jnp.ndarray]


def masked_sum_count(values_BxS: jnp.ndarray, mask_BxS: jnp.ndarray) -> SumCount:
  """Sum of ``values`` where ``mask`` is true, and the number of such entries.

  Args:
    values_BxS: per-token values, any shape.
    mask_BxS: validity of each entry, same shape, bool or {0, 1}.

  Returns:
    ``(sum, count)`` float32 scalars. Masked entries contribute nothing, even
    when they hold NaN or Inf.
  """
  mask = mask_BxS.astype(bool)
  total = jnp.sum(jnp.where(mask, values_BxS.astype(jnp.float32), 0.0))
  return total, jnp.sum(mask.astype(jnp.float32))


def scalar_pair(value) -> SumCount:
  """A (value, 1) pair, for per-step scalars such as the scheduled alpha."""
  return jnp.asarray(value, jnp.float32), jnp.ones((), jnp.float32)


def ratio(pair: SumCount) -> jnp.ndarray:
  """``sum / count``, or 0 when nothing was counted."""
  total, count = pair
  return jnp.where(count > 0, total / jnp.maximum(count, 1e-30), 0.0)


def add_pairs(left: Mapping[str, SumCount], right: Mapping[str, SumCount]) -> dict[str, SumCount]:
  """Adds two metric dicts key by key (both must have the same keys)."""
  return jax.tree.map(jnp.add, dict(left), dict(right))


def gate_pairs(metrics: Mapping[str, SumCount], names, keep) -> dict[str, SumCount]:
  """``metrics`` with the pairs named in ``names`` multiplied by ``keep`` (a 0/1 scalar): kept, or counted as nothing.

  A metric computed only on some steps travels as ``(0, 0)`` on the others, so summing pairs over a window
  still gives the token mean over the steps that computed it.
  """
  keep = jnp.asarray(keep, jnp.float32)
  gated = {name: (pair[0] * keep, pair[1] * keep) for name, pair in metrics.items() if name in names}
  return {**metrics, **gated}


def means(metrics: Mapping[str, SumCount]) -> dict[str, float]:
  """Host-side: turns a dict of (sum, count) pairs into plain floats."""
  return {name: float(ratio(pair)) for name, pair in metrics.items()}
