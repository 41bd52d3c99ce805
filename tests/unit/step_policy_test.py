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

"""The step's batch handling: the ``auto`` loss policy, the strided micro-batch split, the trained rows."""

import types

import jax
import numpy as np
import pytest

from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.training import step


def _config(per_device_batch_size, accumulation, *, seq=2048, vocab=32768):
  return types.SimpleNamespace(
      hardware="gpu",
      attention="dot_product",
      parameter_memory_host_offload=False,
      quantization="",
      logits_via_embedding=False,
      num_vocab_tiling=1,
      per_device_batch_size=per_device_batch_size,
      max_target_length=seq,
      vocab_size=vocab,
      gradient_accumulation_steps=accumulation,
  )


@pytest.mark.parametrize("accumulation", [1, 2, 8])
def test_auto_counts_the_logits_of_one_micro_batch_whatever_the_accumulation(accumulation):
  """per_device_batch_size is per micro-batch, so accumulation must not change the choice: 1 x 2048 x 32768 logits
  (= 2^26, the threshold) per device pick the chunked loss, 0.5 x that does not."""
  settings = DistillSettings(distill_loss_impl="auto")
  assert 1 * 2048 * 32768 == step.AUTO_CHUNKED_MIN_LOGITS
  assert step.use_chunked_loss(settings, _config(1, accumulation), None)
  assert not step.use_chunked_loss(settings, _config(0.5, accumulation), None)


def test_micro_batches_are_strided_so_each_device_keeps_its_rows():
  """Micro-batch i holds rows i, i + k, ...: with rows sharded in contiguous blocks over D devices, every
  micro-batch has B / (D k) rows from each device's block (the NumPy reference: x[i::k])."""
  x = np.arange(16 * 3).reshape(16, 3)
  k = 4
  split = jax.jit(lambda b: step._split_micro_batches(b, k))({"x": x})["x"]  # pylint: disable=protected-access
  assert split.shape == (k, 4, 3)
  for i in range(k):
    np.testing.assert_array_equal(split[i], x[i::k])
    blocks = (np.arange(16)[i::k] // (16 // 4)).tolist()  # device of each row on 4 devices
    assert blocks == [0, 1, 2, 3]


def test_first_rows_keeps_the_rows_maxtext_trains_on():
  batch = {"a": np.arange(2 * 6).reshape(2, 6, 1), "b": np.arange(2 * 6 * 2).reshape(2, 6, 2)}
  out = step._first_rows(batch, 4, axis=1)  # pylint: disable=protected-access
  for key, value in batch.items():
    np.testing.assert_array_equal(out[key], value[:, :4])
  assert step._first_rows(batch, None) is batch  # pylint: disable=protected-access
