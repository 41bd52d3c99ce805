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

"""The offline teacher cache end to end: the real caching tool on the tiny teacher, then reading it back."""

import json
import os
import pickle
import shutil

from array_record.python import array_record_module
import numpy as np
import pytest

from maxtext_distill_plugin import save_top_k_teacher_logits as tool
from maxtext_distill_plugin.loss import sparse_losses
from maxtext_distill_plugin.teacher_cache import codec
from maxtext_distill_plugin.teacher_cache import format as cache_format
from maxtext_distill_plugin.teacher_cache import reader
from maxtext_distill_plugin.teacher_cache import upstream_interop
from maxtext_distill_plugin.teacher_cache import verify
from maxtext_distill_plugin.teacher_cache import writer as cache_writer
from tests.conftest import TINY_YAML, run_cli

TOOL_MODULE = "maxtext_distill_plugin.save_top_k_teacher_logits"
TOP_K, VOCAB, LENGTH, ROWS_PER_STEP, STEPS = 16, 512, 32, 2, 5


def _tool_args(tmp, teacher_checkpoint, cache_dir):
  return [
      TINY_YAML,
      "run_name=cache",
      f"base_output_directory={tmp}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"steps={STEPS}",
      f"offline_data_dir={cache_dir}",
      f"distill_top_k={TOP_K}",
      "--steps-per-shard",
      "2",
  ]


def _digests(directory) -> dict:
  names = sorted(f for f in os.listdir(directory) if f.endswith(".array_record") or f == cache_format.MANIFEST_NAME)
  return {name: cache_writer.file_sha256(os.path.join(directory, name)) for name in names}


@pytest.fixture(scope="module", name="written")
def _written(tmp_path_factory, teacher_checkpoint):
  """The tool run once through its documented command, with the live check."""
  tmp = tmp_path_factory.mktemp("cache_run")
  cache_dir = str(tmp / "cache")
  proc = run_cli(*_tool_args(tmp, teacher_checkpoint, cache_dir), "--check-live", "3", module=TOOL_MODULE)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("live check: "))
  return tmp, cache_dir, json.loads(line[len("live check: ") :])


def test_cache_is_complete_and_verified(written):
  _, cache_dir, _ = written
  report = verify.verify_cache(cache_dir)
  assert report["complete"] and report["shards"] == 3 and report["steps"] == [0, STEPS]
  assert report["records"] == STEPS * ROWS_PER_STEP and report["tokens"] == STEPS * ROWS_PER_STEP * LENGTH
  assert report["topk_bytes_per_token"] < TOP_K * 8  # well below float32 values + int32 ids
  cache = reader.open_cache(cache_dir)
  record = cache[len(cache) - 1]
  assert record["teacher_topk_ids"].shape == (LENGTH, TOP_K) and record["teacher_topk_ids"].dtype == np.int32
  assert record["teacher_topk_logprobs"].dtype == np.float32 and record["teacher_tail_logmass"].shape == (LENGTH,)
  assert np.all(np.diff(record["teacher_topk_ids"], axis=1) > 0)
  np.testing.assert_array_equal(record["targets"][:-1], record["inputs"][1:])  # MaxText's synthetic batches
  total = np.exp(record["teacher_topk_logprobs"].astype(np.float64)).sum(1) + np.exp(record["teacher_tail_logmass"])
  np.testing.assert_allclose(total, 1.0, atol=1e-5)
  # Format 2: the tail's Renyi entropies at the loss's orders, non-increasing, within [0, log(V - k)].
  assert cache.manifest.format_version == cache_format.FORMAT_VERSION == 2
  assert cache.tail_renyi_orders == sparse_losses.TAIL_RENYI_ORDERS
  renyi = record[cache_format.TAIL_RENYI_FIELD]
  assert renyi.shape == (LENGTH, len(sparse_losses.TAIL_RENYI_ORDERS)) and renyi.dtype == np.float32
  assert np.all(np.diff(renyi, axis=1) <= 0) and np.all((renyi >= 0) & (renyi <= np.log(VOCAB - TOP_K) + 1e-6))
  assert np.all(renyi[:, 0] > renyi[:, -1])  # a real, non-uniform tail


def test_live_teacher_agrees_with_cache(written):
  _, _, live = written
  assert live["sequences"] == 3 and live["tokens"] == 3 * LENGTH
  assert live["max_abs_logprob_error"] <= codec.DEFAULT_LOGPROB_STEP
  assert live["max_kl"] <= 1e-3 and live["mean_kl"] <= 2e-4
  assert live["topk_id_agreement"] >= 0.95


def test_resume_after_deleting_last_shard_is_byte_identical(written, teacher_checkpoint, tmp_path):
  tmp, cache_dir, _ = written
  expected = _digests(cache_dir)
  resumed = str(tmp_path / "resumed")
  shutil.copytree(cache_dir, resumed)
  os.remove(os.path.join(resumed, cache_format.shard_name(2, 0)))
  with open(os.path.join(resumed, cache_format.shard_name(3, 0) + ".tmp"), "wb") as f:
    f.write(b"left by a crash")
  assert tool.main(["save_top_k_teacher_logits", *_tool_args(tmp, teacher_checkpoint, resumed)]) == 0
  assert _digests(resumed) == expected
  assert not any(name.endswith(".tmp") for name in os.listdir(resumed))


def test_corrupted_shard_is_refused_naming_the_file(written, tmp_path):
  _, cache_dir, _ = written
  damaged = str(tmp_path / "damaged")
  shutil.copytree(cache_dir, damaged)
  path = os.path.join(damaged, cache_format.shard_name(1, 0))
  manifest = cache_format.read_manifest(damaged)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 3)
    flipped = bytes([f.read(1)[0] ^ 0xFF])
    f.seek(-1, os.SEEK_CUR)
    f.write(flipped)
  with pytest.raises(reader.CacheIntegrityError) as error:
    reader.open_cache(damaged)
  message = str(error.value)
  assert path in message and manifest.shards[1].sha256 in message and cache_writer.file_sha256(path) in message
  with pytest.raises(reader.CacheIntegrityError, match=cache_format.shard_name(1, 0)):
    verify.verify_cache(damaged)
  os.remove(path)
  with pytest.raises(reader.CacheIntegrityError, match="missing"):
    reader.open_cache(damaged, verify_checksums=False)


def _host_dataset(cache, batch_size: int, *, process_index: int, process_count: int, shuffle_seed: int):
  """Grain's own pipeline over the cache: this host's contiguous slice (``reader.host_record_range``), shuffled,
  repeated and batched."""
  import grain  # pylint: disable=import-outside-toplevel

  start, stop = reader.host_record_range(len(cache), process_index, process_count)
  dataset = grain.MapDataset.source(cache)[start:stop].shuffle(seed=shuffle_seed)
  return dataset.repeat().batch(batch_size, drop_remainder=True).to_iter_dataset()


def test_cache_is_a_grain_source(written):
  _, cache_dir, _ = written
  cache = pickle.loads(pickle.dumps(reader.open_cache(cache_dir)))
  batches = iter(_host_dataset(cache, 4, process_index=1, process_count=2, shuffle_seed=0))
  first = next(batches)
  assert first["teacher_topk_logprobs"].shape == (4, LENGTH, TOP_K) and first["inputs"].shape == (4, LENGTH)
  with pytest.raises(IndexError):
    _ = cache[len(cache)]


def _identity(**changes):
  fields = {"teacher_model": "t", "teacher_checkpoint": "c", "tokenizer_path": "tok", "tokenizer_sha256": ""}
  fields.update(vocab_size=VOCAB, top_k=4, max_target_length=8, rows_per_step=2, process_count=1, steps_per_shard=2)
  return cache_format.CacheIdentity(**{**fields, **changes})


def _rows(step):
  rng = np.random.default_rng(step)
  tokens = rng.integers(0, VOCAB, (2, 8)).astype(np.int32)
  logits = rng.normal(size=(2, 8, VOCAB))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ids = np.sort(np.argsort(-logp, axis=-1)[..., :4], axis=-1)
  at_ids = np.take_along_axis(logp, ids, axis=-1)
  rows = {name: tokens for name in cache_format.TOKEN_FIELDS}
  rows.update(targets_segmentation=np.ones((2, 8), np.int32), inputs_segmentation=np.ones((2, 8), np.int32))
  tail = np.log1p(-np.exp(at_ids).sum(-1))
  return {
      **rows,
      "teacher_topk_ids": ids,
      "teacher_topk_logprobs": at_ids.astype(np.float32),
      "teacher_tail_logmass": tail,
  }


def test_writer_crash_mid_shard_is_never_trusted_and_identity_is_checked(tmp_path):
  directory = str(tmp_path / "cache")
  first = cache_writer.HostShardWriter(directory, _identity(), process_index=0, total_steps=4)
  for step in range(3):  # one full shard, then a crash in the middle of the second
    first.write_step(step, _rows(step))
  assert cache_format.read_manifest(directory).shards[-1].last_step == 2
  with pytest.raises(reader.CacheIntegrityError, match="incomplete"):
    reader.open_cache(directory)
  assert len(reader.open_cache(directory, allow_incomplete=True)) == 4
  second = cache_writer.HostShardWriter(directory, _identity(), process_index=0, total_steps=4)
  assert second.next_step == 2
  for step in range(2, 4):
    second.write_step(step, _rows(step))
  second.close()
  assert len(reader.open_cache(directory)) == 8
  with pytest.raises(ValueError, match="top_k: cache has 4, this run 8"):
    cache_writer.HostShardWriter(directory, _identity(top_k=8), process_index=0, total_steps=4)


def test_upstream_record_round_trip(tmp_path):
  """A record shaped like upstream's writer makes it (tf.train.Example, via MaxText's copy of the proto)."""
  from maxtext.input_pipeline.protos import example_pb2  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(5)
  k = 8
  inputs = rng.integers(0, VOCAB, LENGTH)
  logits = rng.normal(size=(LENGTH, VOCAB)).astype(np.float32) * 3
  top_ids = np.argsort(-logits, axis=1)[:, :k]  # best first, as jax.lax.top_k returns them
  top_logits = np.take_along_axis(logits, top_ids, axis=1)
  features = {
      "inputs": inputs, "top_k_logits": top_logits, "top_k_indices": top_ids, "targets": np.roll(inputs, -1),
      "inputs_position": np.arange(LENGTH), "inputs_segmentation": np.ones(LENGTH, np.int64),
      "targets_segmentation": np.r_[np.ones(LENGTH - 4), np.zeros(4)].astype(np.int64),
  }  # fmt: skip
  example = example_pb2.Example()  # pylint: disable=no-member
  for name, value in features.items():
    if value.dtype == np.float32:
      example.features.feature[name].float_list.value.extend(value.ravel().tolist())
    else:
      example.features.feature[name].int64_list.value.extend(value.ravel().astype(np.int64).tolist())
  example.features.feature["sequence_hash"].int64_list.value.append(-(2**62) + 7)  # Python's hash() can be negative
  src = tmp_path / "upstream"
  src.mkdir()
  sink = array_record_module.ArrayRecordWriter(
      str(src / "teacher_top_k_part_00000_host_000.array_record"), "group_size:1"
  )
  for _ in range(3):
    sink.write(example.SerializeToString())
  sink.close()

  parsed = upstream_interop.parse_example(example.SerializeToString())
  assert parsed["sequence_hash"].tolist() == [-(2**62) + 7]
  np.testing.assert_array_equal(parsed["top_k_indices"], top_ids.ravel())
  np.testing.assert_array_equal(parsed["top_k_logits"], top_logits.ravel())

  manifest = upstream_interop.convert_upstream(str(src), str(tmp_path / "ours"), {"vocab_size": VOCAB})
  assert manifest.identity.top_k == k and not manifest.identity.tail_logmass_known and manifest.complete
  cache = reader.open_cache(str(tmp_path / "ours"))
  assert len(cache) == 3
  record = cache[2]
  for name in ("inputs", "targets", "inputs_position", "targets_segmentation"):
    np.testing.assert_array_equal(record[name], features[name], err_msg=name)
  real = features["targets_segmentation"] != 0
  renormalised = top_logits - np.log(np.exp(top_logits.astype(np.float64)).sum(1, keepdims=True))
  order = np.argsort(top_ids, axis=1)
  np.testing.assert_array_equal(record["teacher_topk_ids"][real], np.take_along_axis(top_ids, order, 1)[real])
  expected = np.take_along_axis(renormalised, order, 1)[real]
  assert np.abs(record["teacher_topk_logprobs"][real] - expected).max() <= codec.DEFAULT_LOGPROB_STEP
  assert np.all(np.isneginf(record["teacher_tail_logmass"][real]))
  assert cache_format.TAIL_RENYI_FIELD not in record and not manifest.identity.tail_renyi_orders
