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

"""Several offline teachers: one top-k cache per teacher, all written from the same sequences in the same order.

Each step reads the same records of every cache (one :class:`cache.CacheSource` per cache, same seed and batch), so
the order and resume of a one-cache run carry over. The batch holds the first cache's token fields and each
teacher's cached fields under its own suffix (:func:`field_suffix`), which that teacher's
:class:`kinds.CachedTeacher` reads. The caches must agree on their sequences: checked on a sample when opened
(record count, then the token fields of evenly spaced records), and on every record a step reads.
"""

import numpy as np

from maxtext_distill_plugin.teacher_cache import format as cache_format
from maxtext_distill_plugin.training.sources import base
from maxtext_distill_plugin.training.sources import cache as cache_source

# Records compared across the caches when they are opened (the first, the last and evenly spaced ones between).
OPEN_CHECK_RECORDS = 64


def field_suffix(index: int) -> str:
  """The suffix of teacher ``index``'s cached fields in a batch of several caches."""
  return f"@{index}"


class CachesMismatch(ValueError):
  """Two teacher caches hold different sequences: they cannot score the same batch."""


def check_same_sequences(names: tuple[str, ...], caches) -> None:
  """Refuses caches of different lengths, or whose token fields differ at a sample of records."""
  first = caches[0]
  for name, cache in zip(names[1:], caches[1:]):
    if len(cache) != len(first):
      raise CachesMismatch(
          f"teachers' caches differ in length: {names[0]}={first.directory} holds {len(first)} sequences,"
          f" {name}={cache.directory} {len(cache)}. Fix: cache every teacher on the same sequences (the same data,"
          " steps and batch)."
      )
  indices = sorted(set(np.linspace(0, len(first) - 1, min(OPEN_CHECK_RECORDS, len(first))).astype(int).tolist()))
  reference = first.__getitems__(indices)
  for name, cache in zip(names[1:], caches[1:]):
    _compare(names[0], name, reference, cache.__getitems__(indices), indices)


def _compare(first_name: str, name: str, reference: list[dict], records: list[dict], indices) -> None:
  for index, want, got in zip(indices, reference, records):
    for key in cache_format.TOKEN_FIELDS:
      if not np.array_equal(want[key], got[key]):
        raise CachesMismatch(
            f"teachers' caches hold different sequences: record {index} of {first_name} and {name} differ in {key}."
            " Fix: cache every teacher on the same sequences in the same order (the same data, seed, steps and batch)."
        )


class CachesSource(base.Dispatched):
  """A :class:`base.TrainingSource` over one cache per teacher, read in step."""

  def __init__(self, names: tuple[str, ...], sources: tuple[cache_source.CacheSource, ...], data_sharding):
    check_same_sequences(names, tuple(s.cache for s in sources))
    self._names = names
    self._sources = sources
    self._sharding = data_sharding
    self._step = 0

  def host_batch_arrays(self, step: int) -> dict[str, np.ndarray]:
    first = self._sources[0].host_batch_arrays(step)
    batch = {key: first[key] for key in cache_format.TOKEN_FIELDS}
    for index, (name, source) in enumerate(zip(self._names, self._sources)):
      arrays = first if index == 0 else source.host_batch_arrays(step)
      for key in cache_format.TOKEN_FIELDS:
        if not np.array_equal(arrays[key], batch[key]):
          raise CachesMismatch(
              f"teachers' caches hold different sequences at step {step}: {self._names[0]} and {name} differ in"
              f" {key}. Fix: cache every teacher on the same sequences in the same order."
          )
      batch.update({key + field_suffix(index): value for key, value in arrays.items() if key.startswith("teacher_")})
    return batch

  def skip_to(self, step: int) -> None:
    self._step = step

  def next(self, state, teacher_state) -> tuple[dict, dict]:
    del state, teacher_state  # the caches were written before the run
    local = self.host_batch_arrays(self._step)
    self._step += 1
    return cache_source.place(local, self._sharding), {}
