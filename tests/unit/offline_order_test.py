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

"""The offline batch order: a pure function of (seed, epoch, step), its permutation built once per epoch."""

import numpy as np
import pytest

from maxtext_distill_plugin.training.sources import cache

_RNG = np.random.default_rng  # the reference's own handle, untouched by the call counting below


class _Rows:
  """Stands in for a cache: only its length and directory are read to plan the order."""

  def __init__(self, n: int):
    self.n, self.directory = n, "/cache"

  def __len__(self):
    return self.n


def _reference_rows(step, *, rows, batch, seed):
  """The order as defined since the first release: epoch e is default_rng([seed, e]).permutation(rows)."""
  epoch, position = divmod(step, rows // batch)
  order = np.arange(rows) if seed is None else _RNG([seed, epoch]).permutation(rows)
  return order[position * batch : (position + 1) * batch].tolist()


@pytest.mark.parametrize("seed", [None, 7])
def test_rows_are_unchanged_and_each_epoch_permutes_once(monkeypatch, seed):
  batches = cache.CacheSource(_Rows(103), global_batch=8, data_sharding=None, shuffle_seed=seed)
  calls = []
  monkeypatch.setattr(np.random, "default_rng", lambda *a: calls.append(a) or _RNG(*a))
  steps = list(range(12 * 3)) + [5, 40]  # three epochs of 12 batches, then back to epoch 0 (a restart) and on
  for step in steps:
    assert batches.host_rows(step) == _reference_rows(step, rows=103, batch=8, seed=seed), step
  assert len(calls) == (0 if seed is None else 5), calls  # epochs 0, 1, 2, then 0 and 3 again
