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

"""Writes one host's shards of a teacher cache, crash-safe and resumable.

A shard is written under a temporary name and renamed once closed and hashed;
then the host's ``progress_host{H}.json`` is replaced atomically, and process 0
merges every host's progress into ``manifest.json``. The reader trusts only the
manifest, so a crash at any point leaves either a listed, complete shard or an
unlisted file that the next run deletes. A rerun with the same identity continues
after this host's last complete shard; same inputs give byte-identical shards.
Multi-host runs need ``directory`` on a file system every host sees.
"""

import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import os

from absl import logging
from array_record.python import array_record_module
import numpy as np

from maxtext_distill_plugin.teacher_cache import format as cache_format

ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _read_progress(directory: str, process_index: int) -> cache_format.Manifest | None:
  path = os.path.join(directory, cache_format.progress_name(process_index))
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return cache_format.Manifest.from_json(f.read(), source=path)


def _identity_mismatch(old: cache_format.CacheIdentity, new: cache_format.CacheIdentity) -> list[str]:
  old_fields, new_fields = (json.loads(json.dumps(dataclasses.asdict(x), sort_keys=True)) for x in (old, new))
  return [
      f"{k}: cache has {old_fields[k]!r}, this run {new_fields[k]!r}"
      for k in new_fields
      if old_fields[k] != new_fields[k]
  ]


def _intact_prefix(directory: str, shards, total_steps: int, steps_per_shard: int) -> list[cache_format.ShardInfo]:
  """Listed shards up to the first missing, resized or (for the last one) re-hashed-different file."""
  kept = []
  for i, shard in enumerate(shards):
    path = os.path.join(directory, shard.file)
    if not os.path.isfile(path) or os.path.getsize(path) != shard.bytes:
      break
    if i == len(shards) - 1 and file_sha256(path) != shard.sha256:
      break
    kept.append(shard)
  # A short trailing shard (an earlier run stopped at its `steps`) is redone when the run goes further.
  if kept and kept[-1].last_step < total_steps and kept[-1].last_step - kept[-1].first_step < steps_per_shard:
    kept.pop()
  return kept


class HostShardWriter:
  """Appends one host's sequences, shard by shard.

  Usage::

    writer = HostShardWriter(directory, identity, process_index=0, total_steps=100)
    for step in range(writer.next_step, 100):
      writer.write_step(step, host_rows)   # dict of [rows_per_step, ...] arrays
    writer.close()
  """

  def __init__(
      self,
      directory: str,
      identity: cache_format.CacheIdentity,
      *,
      process_index: int,
      total_steps: int,
      threads: int = 4,
  ):
    self.directory, self.identity, self.process_index, self.total_steps = directory, identity, process_index, total_steps
    os.makedirs(directory, exist_ok=True)
    previous = _read_progress(directory, process_index)
    if previous is not None:
      mismatch = _identity_mismatch(previous.identity, identity)
      if mismatch:
        raise ValueError(
            f"{directory} holds a different cache ({'; '.join(mismatch)}). Fix: use a new offline_data_dir, or rerun"
            " with the settings that wrote it."
        )
    previous_shards = previous.shards if previous else ()
    self.shards = _intact_prefix(directory, previous_shards, total_steps, identity.steps_per_shard)
    self._delete_unlisted_files()
    self._save_progress()
    if process_index == 0:  # Drop shards just found damaged from the trusted list right away.
      write_manifest(directory, identity, total_steps)
    self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads)
    self._writer = None
    self._shard_start = self.next_step
    self._steps_written = self._records = self._tokens = self._topk_bytes = 0

  @property
  def next_step(self) -> int:
    """The first global step this host still has to write."""
    return self.shards[-1].last_step if self.shards else 0

  def _delete_unlisted_files(self) -> None:
    listed = {s.file for s in self.shards}
    pattern = cache_format.shard_name(0, self.process_index).replace("part00000", "part*")
    for path in sorted(glob.glob(os.path.join(self.directory, pattern + "*"))):
      if os.path.basename(path) not in listed:
        logging.info("Removing %s: not part of the finished shards (an interrupted run left it).", path)
        os.remove(path)

  def _temp_path(self) -> str:
    return os.path.join(self.directory, cache_format.shard_name(len(self.shards), self.process_index) + ".tmp")

  def write_step(self, step: int, rows: dict) -> None:
    """Appends the ``rows_per_step`` sequences of global batch ``step`` (host-local rows)."""
    if step != self._shard_start + self._steps_written:
      raise ValueError(f"step {step} out of order: this host expects step {self._shard_start + self._steps_written}")
    if self._writer is None:
      self._writer = array_record_module.ArrayRecordWriter(self._temp_path(), ARRAY_RECORD_OPTIONS)
    count = len(rows["inputs"])
    records = self._executor.map(
        lambda i: cache_format.encode_record(
            {name: value[i] for name, value in rows.items()},
            vocab_size=self.identity.vocab_size,
            logprob_step=self.identity.logprob_step,
        ),
        range(count),
    )
    for record in records:
      self._writer.write(record)
      self._topk_bytes += cache_format.record_topk_bytes(record)
    self._records += count
    self._tokens += int(np.count_nonzero(np.asarray(rows["targets_segmentation"])))
    self._steps_written += 1
    if self._steps_written == self.identity.steps_per_shard:
      self._finish_shard()

  def _finish_shard(self) -> None:
    self._writer.close()
    self._writer = None
    part = len(self.shards)
    final = os.path.join(self.directory, cache_format.shard_name(part, self.process_index))
    temp = self._temp_path()
    shard = cache_format.ShardInfo(
        file=os.path.basename(final),
        sha256=file_sha256(temp),
        records=self._records,
        bytes=os.path.getsize(temp),
        tokens=self._tokens,
        topk_bytes=self._topk_bytes,
        part=part,
        host=self.process_index,
        first_step=self._shard_start,
        last_step=self._shard_start + self._steps_written,
    )
    os.replace(temp, final)
    self.shards.append(shard)
    self._save_progress()
    self._shard_start, self._steps_written = shard.last_step, 0
    self._records = self._tokens = self._topk_bytes = 0
    if self.process_index == 0:
      write_manifest(self.directory, self.identity, self.total_steps)

  def _save_progress(self) -> None:
    progress = cache_format.Manifest(
        identity=self.identity,
        shards=tuple(self.shards),
        first_step=0,
        last_step=self.next_step,
        complete=self.next_step >= self.total_steps,
    )
    path = os.path.join(self.directory, cache_format.progress_name(self.process_index))
    cache_format.write_json_atomically(path, progress.to_json())

  def close(self) -> None:
    """Finishes a partly filled last shard and stops the encoder threads."""
    if self._writer is not None:
      self._finish_shard()
    self._executor.shutdown(wait=True)


def write_manifest(directory: str, identity: cache_format.CacheIdentity, total_steps: int) -> cache_format.Manifest:
  """Merges every host's progress into ``manifest.json`` (process 0 only; all hosts must share ``directory``)."""
  shards, covered = [], []
  for host in range(identity.process_count):
    progress = _read_progress(directory, host)
    host_shards = list(progress.shards) if progress is not None else []
    shards += host_shards
    covered.append(host_shards[-1].last_step if host_shards else 0)
  shards.sort(key=lambda s: (s.part, s.host))
  manifest = cache_format.Manifest(
      identity=identity,
      shards=tuple(shards),
      first_step=0,
      last_step=min(covered),
      complete=min(covered) >= total_steps,
  )
  cache_format.write_json_atomically(os.path.join(directory, cache_format.MANIFEST_NAME), manifest.to_json())
  return manifest
