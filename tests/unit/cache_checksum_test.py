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

"""A cache's shards are hashed once per host (only the shards it reads) and again only when a shard changes."""

import os
import shutil

import numpy as np
import pytest

from maxtext_distill_plugin.teacher_cache import format as cache_format
from maxtext_distill_plugin.teacher_cache import reader
from maxtext_distill_plugin.teacher_cache import verified
from maxtext_distill_plugin.teacher_cache import verify
from maxtext_distill_plugin.teacher_cache import writer as cache_writer

_VOCAB, _K, _LENGTH, _ROWS = 64, 4, 8, 2
_HOSTS, _STEPS, _STEPS_PER_SHARD = 2, 4, 2  # 2 writer hosts x 2 parts = 4 shards of 4 records


def _identity():
  return cache_format.CacheIdentity(
      teacher_model="t",
      teacher_checkpoint="c",
      tokenizer_path="tok",
      tokenizer_sha256="",
      vocab_size=_VOCAB,
      top_k=_K,
      max_target_length=_LENGTH,
      rows_per_step=_ROWS * _HOSTS,
      process_count=_HOSTS,
      steps_per_shard=_STEPS_PER_SHARD,
  )


def _rows(step: int, host: int) -> dict:
  rng = np.random.default_rng([step, host])
  tokens = rng.integers(0, _VOCAB, (_ROWS, _LENGTH)).astype(np.int32)
  logits = rng.normal(size=(_ROWS, _LENGTH, _VOCAB))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ids = np.sort(np.argsort(-logp, axis=-1)[..., :_K], axis=-1)
  at_ids = np.take_along_axis(logp, ids, axis=-1)
  rows = {name: tokens for name in cache_format.TOKEN_FIELDS}
  rows.update(targets_segmentation=np.ones_like(tokens), inputs_segmentation=np.ones_like(tokens))
  rows.update(
      teacher_topk_ids=ids,
      teacher_topk_logprobs=at_ids.astype(np.float32),
      teacher_tail_logmass=np.log1p(-np.exp(at_ids).sum(-1)).astype(np.float32),
  )
  return rows


@pytest.fixture(name="cache_dir")
def _cache_dir(tmp_path, monkeypatch) -> str:
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
  directory = str(tmp_path / "cache")
  for host in range(_HOSTS):
    host_writer = cache_writer.HostShardWriter(directory, _identity(), process_index=host, total_steps=_STEPS)
    for step in range(_STEPS):
      host_writer.write_step(step, _rows(step, host))
    host_writer.close()
  cache_writer.write_manifest(directory, _identity(), _STEPS)
  assert len(cache_format.read_manifest(directory).shards) == 4
  return directory


@pytest.fixture(name="hashed")
def _hashed(monkeypatch) -> list[str]:
  """The files sha256 is computed for, in order (every hash of a shard goes through writer.file_sha256)."""
  calls = []
  real = cache_writer.file_sha256

  def counting(path):
    calls.append(os.path.basename(path))
    return real(path)

  monkeypatch.setattr(cache_writer, "file_sha256", counting)
  return calls


def _rewrite_one_byte(path: str) -> None:
  """Same size, other content, and a later mtime."""
  before = os.stat(path).st_mtime_ns
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0xFF]))
  os.utime(path, ns=(before + 10**9, before + 10**9))


def test_reopening_an_unchanged_cache_hashes_nothing(cache_dir, hashed):
  shards = [s.file for s in cache_format.read_manifest(cache_dir).shards]
  reader.open_cache(cache_dir)
  assert sorted(hashed) == sorted(shards)
  hashed.clear()
  reader.open_cache(cache_dir)
  reader.open_cache(cache_dir, process_index=1, process_count=2)
  assert not hashed
  assert os.path.isfile(verified.record_paths(cache_dir)[0])


def test_each_host_hashes_only_the_shards_it_reads(cache_dir, hashed):
  manifest = cache_format.read_manifest(cache_dir)
  # 16 records, 8 per host: host 0 reads the first two shards in manifest order, host 1 the last two.
  assert [s.records for s in manifest.shards] == [4, 4, 4, 4]
  reader.open_cache(cache_dir, process_index=1, process_count=2)
  assert hashed == [s.file for s in manifest.shards[2:]]
  hashed.clear()
  reader.open_cache(cache_dir, process_index=0, process_count=2)
  assert hashed == [s.file for s in manifest.shards[:2]]
  assert [s.file for s in reader.host_shards(manifest, 0, 3)] == [manifest.shards[0].file, manifest.shards[1].file]
  assert reader.host_record_range(manifest.records, 2, 3) == (10, 15)  # 16 // 3 = 5 per host, the rest dropped


def test_a_changed_shard_is_rehashed_and_caught_the_others_are_not(cache_dir, hashed):
  manifest = cache_format.read_manifest(cache_dir)
  reader.open_cache(cache_dir)
  damaged = manifest.shards[2]
  path = os.path.join(cache_dir, damaged.file)
  original = open(path, "rb").read()  # pylint: disable=consider-using-with,unspecified-encoding
  _rewrite_one_byte(path)
  assert os.path.getsize(path) == damaged.bytes
  hashed.clear()
  with pytest.raises(reader.CacheIntegrityError, match=damaged.file):
    reader.open_cache(cache_dir)
  assert hashed == [damaged.file]
  hashed.clear()
  with pytest.raises(reader.CacheIntegrityError, match=damaged.file):  # a failed shard is never remembered
    reader.open_cache(cache_dir)
  assert hashed == [damaged.file]
  with open(path, "wb") as f:
    f.write(original)
  hashed.clear()
  reader.open_cache(cache_dir)
  assert hashed == [damaged.file]


def test_a_rewrite_that_restores_the_mtime_is_still_seen(cache_dir, hashed):
  reader.open_cache(cache_dir)
  shard = cache_format.read_manifest(cache_dir).shards[0]
  path = os.path.join(cache_dir, shard.file)
  stat = os.stat(path)
  _rewrite_one_byte(path)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert os.stat(path).st_mtime_ns == stat.st_mtime_ns and os.path.getsize(path) == stat.st_size
  hashed.clear()
  with pytest.raises(reader.CacheIntegrityError, match=shard.file):
    reader.open_cache(cache_dir)
  assert hashed == [shard.file]


def test_a_cache_dir_that_cannot_be_written_keeps_the_record_in_the_user_cache(cache_dir, hashed):
  # A file where the record directory would go makes the cache directory unwritable for the record, as a read-only
  # mount does (tests run as root, for whom permission bits are no obstacle).
  with open(os.path.join(cache_dir, verified.RECORD_DIR), "w", encoding="utf-8") as f:
    f.write("not a directory")
  reader.open_cache(cache_dir)
  assert len(hashed) == 4
  assert os.path.isfile(verified.record_paths(cache_dir)[1])
  hashed.clear()
  reader.open_cache(cache_dir)
  assert not hashed


def test_a_copied_cache_is_hashed_again(cache_dir, hashed, tmp_path):
  reader.open_cache(cache_dir)
  copy = str(tmp_path / "copy")
  shutil.copytree(cache_dir, copy)  # copies the record and the mtimes, not the inodes
  hashed.clear()
  reader.open_cache(copy)
  assert len(hashed) == 4


def test_verify_always_rehashes_and_refreshes_the_record(cache_dir, hashed):
  reader.open_cache(cache_dir)
  hashed.clear()
  assert verify.main(["verify", cache_dir]) == 0
  assert len(hashed) == 4
  hashed.clear()
  reader.open_cache(cache_dir)
  assert not hashed
  _rewrite_one_byte(os.path.join(cache_dir, cache_format.read_manifest(cache_dir).shards[3].file))
  assert verify.main(["verify", cache_dir]) == 1
