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

"""Tests for maxtext_distill_plugin.loss.reductions: token-weighted (sum, count) pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import reductions

RTOL = 1e-5
ATOL = 1e-6
B, S = 3, 7


def _values_and_mask(seed, shape=(B, S)):
  rng = np.random.default_rng(seed)
  values = rng.standard_normal(shape).astype(np.float32)
  mask = rng.random(shape) < 0.6
  mask.flat[0] = True  # At least one valid and one padded entry.
  mask.flat[-1] = False
  return values, mask


@pytest.mark.parametrize("mask_dtype", (np.bool_, np.int32, np.float32))
def test_masked_sum_count_equals_slicing(mask_dtype):
  values, mask = _values_and_mask(0)
  total, count = reductions.masked_sum_count(jnp.asarray(values), jnp.asarray(mask.astype(mask_dtype)))
  assert total.dtype == jnp.float32 and count.dtype == jnp.float32
  assert total.shape == () and count.shape == ()
  np.testing.assert_allclose(float(total), np.sum(values[mask], dtype=np.float64), rtol=RTOL, atol=ATOL)
  assert float(count) == mask.sum()


def test_masked_sum_count_any_shape_and_under_jit():
  values, mask = _values_and_mask(1, shape=(2, 3, 5))
  total, count = jax.jit(reductions.masked_sum_count)(jnp.asarray(values), jnp.asarray(mask))
  np.testing.assert_allclose(float(total), np.sum(values[mask], dtype=np.float64), rtol=RTOL, atol=ATOL)
  assert float(count) == mask.sum()


def test_masked_sum_count_promotes_bf16_to_float32():
  values, mask = _values_and_mask(2)
  values_bf16 = jnp.asarray(values, jnp.bfloat16)
  total, count = reductions.masked_sum_count(values_bf16, jnp.asarray(mask))
  assert total.dtype == jnp.float32
  want = np.sum(np.asarray(values_bf16.astype(jnp.float32), np.float64)[mask])
  np.testing.assert_allclose(float(total), want, rtol=RTOL, atol=ATOL)
  assert float(count) == mask.sum()


def test_masked_sum_count_all_masked_and_all_valid():
  values, _ = _values_and_mask(3)
  total, count = reductions.masked_sum_count(jnp.asarray(values), jnp.zeros((B, S), bool))
  assert float(total) == 0.0 and float(count) == 0.0
  total, count = reductions.masked_sum_count(jnp.asarray(values), jnp.ones((B, S), bool))
  np.testing.assert_allclose(float(total), np.sum(values, dtype=np.float64), rtol=RTOL, atol=ATOL)
  assert float(count) == B * S


@pytest.mark.parametrize("poison", (np.nan, np.inf, -np.inf))
def test_non_finite_values_in_masked_positions_do_not_leak(poison):
  values, mask = _values_and_mask(4)
  poisoned = np.where(mask, values, poison).astype(np.float32)

  def masked_sum(v):
    return reductions.masked_sum_count(v, jnp.asarray(mask))[0]

  total, count = reductions.masked_sum_count(jnp.asarray(poisoned), jnp.asarray(mask))
  assert np.isfinite(float(total))
  np.testing.assert_allclose(float(total), np.sum(values[mask], dtype=np.float64), rtol=RTOL, atol=ATOL)
  assert float(count) == mask.sum()
  # The gradient is exactly the mask: no NaN flows back from the padded entries either.
  grad = np.asarray(jax.grad(masked_sum)(jnp.asarray(poisoned)))
  np.testing.assert_array_equal(grad, mask.astype(np.float32))


def test_ratio():
  np.testing.assert_allclose(float(reductions.ratio((jnp.float32(6.0), jnp.float32(4.0)))), 1.5, rtol=RTOL)
  assert float(reductions.ratio((jnp.float32(0.0), jnp.float32(0.0)))) == 0.0
  assert float(reductions.ratio((jnp.float32(5.0), jnp.float32(0.0)))) == 0.0
  assert float(jax.jit(reductions.ratio)((jnp.float32(5.0), jnp.float32(0.0)))) == 0.0
  # No NaN gradient through an empty pair.
  grad = jax.grad(lambda t: reductions.ratio((t, jnp.float32(0.0))))(jnp.float32(5.0))
  assert float(grad) == 0.0


def test_scalar_pair():
  value, count = reductions.scalar_pair(0.25)
  assert value.dtype == jnp.float32 and count.dtype == jnp.float32
  assert float(value) == 0.25 and float(count) == 1.0


def test_add_pairs_adds_key_by_key():
  left = {"a": (jnp.float32(1.0), jnp.float32(2.0)), "b": (jnp.float32(-3.0), jnp.float32(5.0))}
  right = {"a": (jnp.float32(0.5), jnp.float32(1.0)), "b": (jnp.float32(4.0), jnp.float32(0.0))}
  summed = reductions.add_pairs(left, right)
  assert isinstance(summed, dict)
  assert set(summed) == {"a", "b"}
  np.testing.assert_allclose([float(x) for x in summed["a"]], [1.5, 3.0], rtol=RTOL)
  np.testing.assert_allclose([float(x) for x in summed["b"]], [1.0, 5.0], rtol=RTOL)
  # The inputs are not modified.
  assert float(left["a"][0]) == 1.0 and float(right["b"][1]) == 0.0


def test_add_pairs_under_jit():
  left = {"x": (jnp.float32(2.0), jnp.float32(1.0))}
  right = {"x": (jnp.float32(3.0), jnp.float32(3.0))}
  summed = jax.jit(reductions.add_pairs)(left, right)
  np.testing.assert_allclose([float(x) for x in summed["x"]], [5.0, 4.0], rtol=RTOL)


def test_means_converts_to_floats():
  metrics = {
      "loss": (jnp.float32(9.0), jnp.float32(4.0)),
      "empty": (jnp.float32(0.0), jnp.float32(0.0)),
      "scalar": reductions.scalar_pair(0.5),
  }
  means = reductions.means(metrics)
  assert set(means) == set(metrics)
  for value in means.values():
    assert type(value) is float  # pylint: disable=unidiomatic-typecheck
  assert means == {"loss": 2.25, "empty": 0.0, "scalar": 0.5}


def test_sum_count_aggregation_over_uneven_chunks_is_the_global_token_mean():
  rng = np.random.default_rng(5)
  # Chunks (micro-batches / hosts) with very different numbers of valid tokens and different typical values.
  chunk_sizes = (1, 4, 9)
  chunks = []
  for i, size in enumerate(chunk_sizes):
    values = (rng.standard_normal((2, 5)) + 3.0 * i).astype(np.float32)
    mask = np.zeros((2, 5), bool)
    mask.flat[rng.permutation(10)[:size]] = True
    chunks.append((values, mask))

  aggregated = None
  per_chunk_means = []
  for values, mask in chunks:
    pair = {"loss": reductions.masked_sum_count(jnp.asarray(values), jnp.asarray(mask))}
    per_chunk_means.append(reductions.means(pair)["loss"])
    aggregated = pair if aggregated is None else reductions.add_pairs(aggregated, pair)

  all_valid = np.concatenate([values[mask] for values, mask in chunks]).astype(np.float64)
  global_mean = all_valid.mean()
  assert float(aggregated["loss"][1]) == sum(chunk_sizes)
  np.testing.assert_allclose(reductions.means(aggregated)["loss"], global_mean, rtol=RTOL, atol=ATOL)
  # The mean of per-chunk means weighs the single-token chunk like the nine-token one: it is biased.
  assert abs(np.mean(per_chunk_means) - global_mean) > 0.1
