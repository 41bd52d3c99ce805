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

"""Reads a teacher cache: random access by global record index, a Grain data source.

Global record order is shard order in the manifest (part, then host), then the
order of records inside a shard. Each record decodes to a dict of NumPy arrays::

  inputs, targets, inputs_segmentation, targets_segmentation,
  inputs_position, targets_position                      [S] int32
  teacher_topk_ids                                       [S, k] int32, ascending id per row
  teacher_topk_logprobs                                  [S, k] float32, log p at T=1
  teacher_tail_logmass                                   [S] float32, log of the mass outside the k ids
  teacher_tail_renyi                                     [S, R] float32, the tail's Renyi entropies at the
                                                         manifest's tail_renyi_orders (format 2 only)
"""

import bisect
import os
import threading

from absl import logging
from array_record.python import array_record_module
import numpy as np

from maxtext_distill_plugin.teacher_cache import format as cache_format
from maxtext_distill_plugin.teacher_cache import verified
from maxtext_distill_plugin.teacher_cache import writer as cache_writer


class CacheIntegrityError(ValueError):
  """A shard is missing, resized or altered; the message names the file, the expected and the actual value."""


class TeacherCache:
  """A Grain ``RandomAccessDataSource`` over a cache's shards (``len``, ``[i]``). Picklable: readers reopen lazily."""

  def __init__(self, directory: str, manifest: cache_format.Manifest):
    self.directory = directory
    self.manifest = manifest
    self._record_starts = np.cumsum([0] + [s.records for s in manifest.shards]).tolist()
    self._readers: dict[int, array_record_module.ArrayRecordReader] = {}
    self._lock = threading.Lock()

  @property
  def top_k(self) -> int:
    return self.manifest.identity.top_k

  @property
  def tail_logmass_known(self) -> bool:
    return self.manifest.identity.tail_logmass_known

  @property
  def tail_renyi_orders(self) -> tuple:
    return self.manifest.identity.tail_renyi_orders

  @property
  def vocab_size(self) -> int:
    return self.manifest.identity.vocab_size

  def __len__(self) -> int:
    return self._record_starts[-1]

  def __repr__(self) -> str:
    return f"TeacherCache({self.directory!r}, records={len(self)}, k={self.top_k})"

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_readers"], state["_lock"] = {}, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _reader(self, shard_index: int) -> array_record_module.ArrayRecordReader:
    with self._lock:
      if shard_index not in self._readers:
        path = os.path.join(self.directory, self.manifest.shards[shard_index].file)
        self._readers[shard_index] = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")
      return self._readers[shard_index]

  def locate(self, index: int) -> tuple[int, int]:
    """``(shard index, record index inside the shard)`` of global record ``index``."""
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} is outside [0, {len(self)}) of {self.directory}")
    shard = bisect.bisect_right(self._record_starts, index) - 1
    return shard, index - self._record_starts[shard]

  def raw_record(self, index: int) -> bytes:
    shard, offset = self.locate(index)
    return self._reader(shard).read([offset])[0]

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    return cache_format.decode_record(self.raw_record(index), vocab_size=self.vocab_size)

  def __getitems__(self, indices) -> list[dict[str, np.ndarray]]:
    return [self[i] for i in indices]

  def close(self) -> None:
    with self._lock:
      for reader in self._readers.values():
        reader.close()
      self._readers.clear()


def iter_shard_records(path: str, chunk: int = 64):
  """``(index, record bytes)`` of one ArrayRecord file in order, ``chunk`` records in memory at a time."""
  records = array_record_module.ArrayRecordReader(path)
  try:
    total = records.num_records()
    for start in range(0, total, chunk):
      for offset, raw in enumerate(records.read(list(range(start, min(start + chunk, total))))):
        yield start + offset, raw
  finally:
    records.close()


def check_shard(directory: str, shard: cache_format.ShardInfo, *, checksum: bool = True) -> None:
  """Raises :class:`CacheIntegrityError` naming the file when it differs from the manifest."""
  path = os.path.join(directory, shard.file)
  if not os.path.isfile(path):
    raise CacheIntegrityError(f"{path}: listed in the manifest but missing. Fix: rerun the caching tool to resume.")
  size = os.path.getsize(path)
  if size != shard.bytes:
    raise CacheIntegrityError(f"{path}: size expected {shard.bytes} bytes, actual {size}. The shard is damaged.")
  if checksum:
    actual = cache_writer.file_sha256(path)
    if actual != shard.sha256:
      raise CacheIntegrityError(
          f"{path}: sha256 expected {shard.sha256}, actual {actual}. The shard is damaged; delete it and rerun the"
          " caching tool, which rewrites it."
      )


def host_record_range(records: int, process_index: int, process_count: int) -> tuple[int, int]:
  """``[start, stop)`` of the global records host ``process_index`` trains on: contiguous equal slices, the rest
  dropped (the split of :class:`sources.cache.CacheSource`)."""
  per_host = records // process_count
  return process_index * per_host, (process_index + 1) * per_host


def host_shards(
    manifest: cache_format.Manifest, process_index: int = 0, process_count: int = 1
) -> list[cache_format.ShardInfo]:
  """The shards holding at least one record of host ``process_index``'s slice."""
  start, stop = host_record_range(manifest.records, process_index, process_count)
  shards, first = [], 0
  for shard in manifest.shards:
    if first < stop and first + shard.records > start:
      shards.append(shard)
    first += shard.records
  return shards


def open_cache(
    directory: str,
    *,
    verify_checksums: bool = True,
    allow_incomplete: bool = False,
    process_index: int = 0,
    process_count: int = 1,
) -> TeacherCache:
  """Opens a cache after checking its manifest, every shard's size and the sha256 of this host's shards.

  Each shard this host reads is hashed once per host and remembered
  (:mod:`verified`); a later open re-hashes only shards whose file changed
  (size, mtime, ctime, inode) or whose manifest hash did.

  Args:
    directory: the cache directory (``offline_data_dir``).
    verify_checksums: hash this host's shards that are not verified yet; sizes are always checked.
    allow_incomplete: accept a cache whose writing has not finished (only its listed shards are read).
    process_index: this host (``jax.process_index()``): only its slice of the records is hashed.
    process_count: ``jax.process_count()``.

  Returns:
    A :class:`TeacherCache`.
  """
  manifest = cache_format.read_manifest(directory)
  if not manifest.complete and not allow_incomplete:
    raise CacheIntegrityError(
        f"{os.path.join(directory, cache_format.MANIFEST_NAME)}: the cache is incomplete (steps"
        f" [{manifest.first_step}, {manifest.last_step}) written). Fix: rerun the caching tool with the same arguments to"
        " finish it."
    )
  for shard in manifest.shards:
    check_shard(directory, shard, checksum=False)
  if verify_checksums:
    memo = verified.ShardMemo(directory)
    hashed = 0
    try:
      for shard in host_shards(manifest, process_index, process_count):
        if memo.is_verified(shard.file, shard.sha256):
          continue
        try:
          check_shard(directory, shard, checksum=True)
        except CacheIntegrityError:
          memo.forget(shard.file)
          raise
        memo.remember(shard.file, shard.sha256)
        hashed += 1
    finally:
      memo.save()
    logging.info("Checksums: hashed %d shard(s) of this host; the others were verified before and are unchanged.", hashed)
  logging.info("Opened teacher cache %s: %d sequences, k=%d", directory, manifest.records, manifest.identity.top_k)
  return TeacherCache(directory, manifest)
