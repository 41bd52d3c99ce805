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

"""Offline batches: the student's training data read from a teacher top-k cache, no teacher in memory.

Batch ``b`` of an epoch is a pure function of ``(b, seed)``: host ``h`` reads its own contiguous slice of the cache
(:func:`reader.host_record_range`), permuted per epoch when a seed is set. So a resumed run only needs the step
number to continue exactly where it stopped, and nothing about the data position has to live in the checkpoint.

Each batch carries the cached teacher next to MaxText's token keys, under the cache's field names
(:data:`format.TEACHER_FIELDS`, plus :data:`format.TAIL_RENYI_FIELD` from a format-2 cache), which the compiled
step reads as the teacher's top-k.
"""

import jax
import numpy as np

from maxtext_distill_plugin.teacher_cache import any_format
from maxtext_distill_plugin.teacher_cache import format as cache_format
from maxtext_distill_plugin.training.sources import base


def place(local: dict, sharding) -> dict:
  """This process's rows of a global batch (host arrays) as global arrays on the student's data sharding."""
  return {key: jax.make_array_from_process_local_data(sharding, value) for key, value in local.items()}


class CacheSource(base.Dispatched):
  """A :class:`base.TrainingSource` over a cache: host-local rows stitched into global arrays on the data sharding."""

  def __init__(self, cache: any_format.CacheReader, *, global_batch: int, data_sharding, shuffle_seed: int | None):
    processes, index = jax.process_count(), jax.process_index()
    if global_batch % processes:
      raise ValueError(f"global batch {global_batch} does not split over {processes} processes")
    self.cache = cache
    self.host_batch = global_batch // processes
    per_host = len(cache) // processes
    if per_host < self.host_batch:
      raise ValueError(
          f"offline_data_dir={cache.directory} holds {len(cache)} sequences: fewer than one batch of"
          f" {self.host_batch} rows per host. Fix: cache more steps or lower per_device_batch_size."
      )
    self._first_row = index * per_host
    self._rows_per_host = per_host
    self._batches_per_epoch = per_host // self.host_batch
    self._seed = shuffle_seed
    self._sharding = data_sharding
    self._order: tuple[int, np.ndarray] | None = None  # (epoch, its row order): built once per epoch, not per step
    self._step = 0

  def epoch_order(self, epoch: int) -> np.ndarray:
    """This host's row order in ``epoch`` (0-based rows of its slice): a pure function of ``(seed, epoch)``."""
    if self._order is None or self._order[0] != epoch:
      if self._seed is None:
        order = np.arange(self._rows_per_host)
      else:
        order = np.random.default_rng([self._seed, epoch]).permutation(self._rows_per_host)
      self._order = (epoch, order)
    return self._order[1]

  def host_rows(self, step: int) -> list[int]:
    """The cache records this host reads for optimizer ``step``."""
    epoch, position = divmod(step, self._batches_per_epoch)
    rows = self.epoch_order(epoch)[position * self.host_batch : (position + 1) * self.host_batch]
    return [self._first_row + int(r) for r in rows]

  def host_batch_arrays(self, step: int) -> dict[str, np.ndarray]:
    records = self.cache.__getitems__(self.host_rows(step))
    optional = (cache_format.TAIL_RENYI_FIELD,) if cache_format.TAIL_RENYI_FIELD in records[0] else ()
    keys = cache_format.TOKEN_FIELDS + cache_format.TEACHER_FIELDS + optional
    return {key: np.stack([r[key] for r in records]) for key in keys}

  def load(self, step: int) -> dict:
    """The global batch of optimizer ``step``."""
    return place(self.host_batch_arrays(step), self._sharding)

  def skip_to(self, step: int) -> None:
    self._step = step

  def next(self, state, teacher_state) -> tuple[dict, dict]:
    del state, teacher_state  # the cache was written before the run
    batch = self.load(self._step)
    self._step += 1
    return batch, {}
