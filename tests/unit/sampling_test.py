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

"""The model-free parts of sampling: top-k / top-p filtering against a float64 NumPy reference, the options'
validation, and the left-aligned layout of :func:`sampling.assemble`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.model import sampling
from maxtext_distill_plugin.model import sampling_filters


def _reference_allowed(logits, temperature, top_k, top_p):
  """Allowed-token mask per row, float64: top-k by value, then the smallest descending prefix with mass >= top_p."""
  z = logits.astype(np.float64) / temperature
  allowed = np.ones_like(z, dtype=bool)
  for b, row in enumerate(z):
    order = np.argsort(-row, kind="stable")
    keep = np.zeros(row.shape, bool)
    k = top_k if 0 < top_k < row.size else row.size
    keep[order[:k]] = True
    if top_p < 1.0:
      survivors = order[:k]
      p = np.exp(row[survivors] - row[survivors].max())
      p /= p.sum()
      before = np.cumsum(p) - p
      keep[:] = False
      keep[survivors[(before < top_p) | (np.arange(k) == 0)]] = True
    allowed[b] = keep
  return allowed


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, 0, 1.0), (1.0, 5, 1.0), (0.7, 0, 0.9), (1.3, 7, 0.5), (1.0, 0, 1e-6)]
)
def test_filtered_logits_match_reference(temperature, top_k, top_p):
  logits = np.random.default_rng(3).normal(size=(4, 37)) * 2.0
  got = np.asarray(
      jax.jit(sampling_filters.filtered_logits, static_argnames=("temperature", "top_k", "top_p"))(
          jnp.asarray(logits, jnp.float32), temperature=temperature, top_k=top_k, top_p=top_p
      )
  )
  allowed = _reference_allowed(logits, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isfinite(got), allowed)
  np.testing.assert_allclose(got[allowed], (logits / temperature)[allowed], rtol=1e-6, atol=1e-6)
  if top_p == 1e-6 or top_k == 1:
    assert (allowed.sum(-1) == 1).all()


def test_options_refuse_bad_values():
  with pytest.raises(ValueError, match="temperature=-0.5"):
    sampling.SampleOptions(max_new_tokens=4, eos_id=1, temperature=-0.5)
  with pytest.raises(ValueError, match="top_p=0.0"):
    sampling.SampleOptions(max_new_tokens=4, eos_id=1, top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens=0"):
    sampling.SampleOptions(max_new_tokens=0, eos_id=1)
  with pytest.raises(ValueError, match="top_k=-1"):
    sampling.SampleOptions(max_new_tokens=4, eos_id=1, top_k=-1)
  assert sampling.SampleOptions(max_new_tokens=4, eos_id=1, temperature=0.0).greedy


def test_assemble_is_left_aligned():
  prompt = np.array([[5, 6, 7, 9], [8, 9, 9, 9]], np.int32)  # row 1: length 1, the 9s are padding
  completion = np.array([[11, 12, 2], [13, 2, 0]], np.int32)  # eos 2; row 1 stopped after 2 tokens
  out = sampling.assemble(
      jnp.asarray(prompt), jnp.array([3, 1]), jnp.asarray(completion), jnp.array([3, 2]), jnp.array([True, True]), 0
  )
  np.testing.assert_array_equal(out.tokens_BxS, [[5, 6, 7, 11, 12, 2, 0], [8, 13, 2, 0, 0, 0, 0]])
  np.testing.assert_array_equal(out.prompt_mask_BxS, [[1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(out.completion_mask_BxS, [[0, 0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(out.completion_length_B, [3, 2])
