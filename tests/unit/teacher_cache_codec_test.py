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

"""Tests for the teacher-cache codec and record/manifest format, on LM-like synthetic distributions."""

import dataclasses
import struct
import time

import numpy as np
import pytest

from maxtext_distill_plugin.teacher_cache import codec
from maxtext_distill_plugin.teacher_cache import format as cache_format

VOCAB, TOP_K, ROWS = 32000, 128, 512
MAX_BYTES_PER_TOKEN = 300
RENYI_ORDERS = (0.25, 0.5, 1.0, 2.0)  # any increasing orders; these are the plugin's
MAX_RENYI_BYTES_PER_TOKEN = 8  # R=4 orders at 2 bytes each, before compression
MAX_KL = 1e-3


def lm_like_log_probs(rng, rows: int, vocab: int) -> np.ndarray:
  """Peaked next-token distributions: Zipfian unigram prior + Gaussian context noise + a few boosted candidates.

  Mean entropy is about 2.2 nats and the mean top-1 probability about 0.6, like a
  trained LM; frequent tokens are scattered over the id space (no help to id coding).
  """
  unigram = (-1.1 * np.log1p(rng.permutation(vocab))).astype(np.float32)
  sharpness = rng.uniform(1.0, 2.5, size=(rows, 1)).astype(np.float32)
  logits = unigram + sharpness * rng.standard_normal((rows, vocab), dtype=np.float32)
  for row, count in enumerate(rng.integers(1, 12, size=rows)):
    candidates = rng.choice(vocab, count, replace=False)
    logits[row, candidates] += rng.exponential(4.0, count) + rng.uniform(2.0, 12.0)
  logits = logits.astype(np.float64)
  peak = logits.max(axis=1, keepdims=True)
  return logits - peak - np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))


def top_k_with_tail(log_probs: np.ndarray, k: int):
  """Top-k ids (rank order), their log-probs and the exact log of the remaining mass."""
  ids = (
      np.argpartition(-log_probs, k - 1, axis=1)[:, :k]
      if k < log_probs.shape[1]
      else np.tile(np.arange(k), (log_probs.shape[0], 1))
  )
  at_ids = np.take_along_axis(log_probs, ids, axis=1)
  order = np.argsort(-at_ids, axis=1)
  ids, at_ids = np.take_along_axis(ids, order, axis=1), np.take_along_axis(at_ids, order, axis=1)
  rest = log_probs.copy()
  np.put_along_axis(rest, ids, -np.inf, axis=1)
  with np.errstate(divide="ignore"):
    tail = np.log(np.exp(rest).sum(axis=1))
  return ids.astype(np.int32), at_ids, tail


def bucket_kl(original_logp, original_tail, decoded_logp, decoded_tail) -> np.ndarray:
  """KL(original || decoded) over the k+1 buckets, per row, float64."""
  p = np.concatenate([original_logp, original_tail[:, None]], axis=1)
  q = np.concatenate([decoded_logp, decoded_tail[:, None]], axis=1).astype(np.float64)
  with np.errstate(invalid="ignore"):
    return np.where(np.exp(p) > 0, np.exp(p) * (p - q), 0.0).sum(axis=1)


def tail_renyi(log_probs: np.ndarray, ids: np.ndarray, orders=RENYI_ORDERS) -> np.ndarray:
  """float64 Renyi entropies ``[N, R]`` of each row's tail (the tokens outside ``ids``), renormalised."""
  rest = np.array(log_probs, np.float64)
  np.put_along_axis(rest, ids, -np.inf, axis=1)
  r = np.exp(rest - np.log(np.exp(rest).sum(axis=1, keepdims=True)))
  with np.errstate(divide="ignore"):
    log_r = np.log(r)
  columns = [
      -np.sum(np.where(r > 0, r * np.where(r > 0, log_r, 0.0), 0.0), axis=1)
      if tau == 1.0
      else np.log(np.sum(r**tau, axis=1)) / (1.0 - tau)
      for tau in orders
  ]
  return np.stack(columns, axis=1)


def as_version_1(blob: bytes) -> bytes:
  """A version-2 block without Renyi entropies (R = 0) rewritten as the version-1 block of the same rows."""
  header, lengths = struct.Struct("<4sBHIIfB"), struct.Struct("<6I")
  fields = header.unpack_from(blob)
  sections = lengths.unpack_from(blob, header.size)
  assert fields[-1] == 0 and sections[-1] == 0
  v1_header = struct.Struct("<4sBHIIf").pack(b"TKB1", *fields[1:-1])
  return v1_header + struct.Struct("<5I").pack(*sections[:-1]) + blob[header.size + lengths.size :]


@pytest.fixture(scope="module", name="lm_block")
def _lm_block():
  rng = np.random.default_rng(0)
  log_probs = lm_like_log_probs(rng, ROWS, VOCAB)
  ids, logprobs, tail = top_k_with_tail(log_probs, TOP_K)
  renyi = tail_renyi(log_probs, ids)
  blob = codec.encode_topk(ids, logprobs.astype(np.float32), tail, vocab_size=VOCAB, tail_renyi_NxR=renyi)
  return log_probs, ids, logprobs, tail, blob, renyi


def _by_id(ids, values):
  order = np.argsort(ids, axis=1)
  return np.take_along_axis(ids, order, axis=1), np.take_along_axis(values, order, axis=1)


def test_ids_are_lossless_and_logprobs_follow_them(lm_block):
  _, ids, logprobs, tail, blob, _ = lm_block
  decoded = codec.decode_topk(blob)
  sorted_ids, sorted_logprobs = _by_id(ids, logprobs)
  np.testing.assert_array_equal(decoded.ids, sorted_ids)
  assert decoded.ids.dtype == np.int32 and decoded.logprobs.dtype == np.float32
  np.testing.assert_array_equal(decoded.tail_logmass, tail.astype(np.float32))
  assert np.abs(decoded.logprobs - sorted_logprobs).max() <= codec.DEFAULT_LOGPROB_STEP


def test_reconstruction_kl_is_below_1e3_nats(lm_block):
  log_probs, ids, logprobs, tail, blob, _ = lm_block
  decoded = codec.decode_topk(blob)
  sorted_ids, sorted_logprobs = _by_id(ids, logprobs)
  kl = bucket_kl(sorted_logprobs, tail, decoded.logprobs, decoded.tail_logmass)
  print(f"KL@T=1 mean {kl.mean():.2e} max {kl.max():.2e}; entropy {-(np.exp(log_probs) * log_probs).sum(1).mean():.2f}")
  assert kl.max() <= MAX_KL
  assert kl.mean() <= MAX_KL / 10
  total = np.exp(decoded.logprobs.astype(np.float64)).sum(axis=1) + np.exp(decoded.tail_logmass.astype(np.float64))
  np.testing.assert_allclose(total, 1.0, atol=1e-5)
  del sorted_ids


@pytest.mark.parametrize("scale", (0.1, 1.0, 4.0, 20.0))
@pytest.mark.parametrize("step", (1.0 / 16.0, 0.5))
def test_kl_never_exceeds_the_hoeffding_bound(scale, step):
  """KL(original || decoded) <= step^2 / 8 for flat to very peaked rows (the codec's documented guarantee)."""
  rng = np.random.default_rng(int(scale * 10))
  logits = rng.standard_normal((256, 1000)) * scale
  log_probs = logits - logits.max(1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
  ids, logprobs, tail = top_k_with_tail(log_probs, 64)
  decoded = codec.decode_topk(codec.encode_topk(ids, logprobs, tail, vocab_size=1000, logprob_step=step))
  _, sorted_logprobs = _by_id(ids, logprobs)
  kl = bucket_kl(sorted_logprobs, tail, decoded.logprobs, decoded.tail_logmass)
  assert kl.max() <= step**2 / 8 + 1e-6


def test_bytes_per_token_at_k128_v32k(lm_block):
  _, ids, logprobs, tail, blob, _ = lm_block
  bytes_per_token = len(blob) / ROWS
  without_renyi = len(codec.encode_topk(ids, logprobs.astype(np.float32), tail, vocab_size=VOCAB)) / ROWS
  print(f"{bytes_per_token:.1f} bytes/token at k={TOP_K}, V={VOCAB} ({without_renyi:.1f} without the tail entropies)")
  assert bytes_per_token <= MAX_BYTES_PER_TOKEN
  assert 0 < bytes_per_token - without_renyi <= MAX_RENYI_BYTES_PER_TOKEN


def test_tail_renyi_round_trip_within_the_quantisation_step(lm_block):
  _, _, _, _, blob, renyi = lm_block
  decoded = codec.decode_topk(blob)
  assert decoded.tail_renyi.shape == (ROWS, len(RENYI_ORDERS)) and decoded.tail_renyi.dtype == np.float32
  quantum = np.log(VOCAB - TOP_K) / 65535
  assert np.abs(decoded.tail_renyi - renyi).max() <= quantum / 2 + 1e-5
  assert np.all(np.diff(decoded.tail_renyi, axis=1) <= 0)  # still non-increasing in the order


def test_version_1_blocks_still_decode(lm_block):
  _, ids, logprobs, tail, blob, _ = lm_block
  plain = codec.encode_topk(ids, logprobs.astype(np.float32), tail, vocab_size=VOCAB)
  old, new = codec.decode_topk(as_version_1(plain)), codec.decode_topk(blob)
  assert plain[:4] == b"TKB2" and as_version_1(plain)[:4] == b"TKB1"
  assert old.tail_renyi is None and codec.decode_topk(plain).tail_renyi is None
  np.testing.assert_array_equal(old.ids, new.ids)
  np.testing.assert_array_equal(old.logprobs, new.logprobs)
  np.testing.assert_array_equal(old.tail_logmass, new.tail_logmass)


def test_deterministic_and_independent_of_row_order(lm_block):
  _, ids, logprobs, tail, blob, renyi = lm_block
  shuffle = np.random.default_rng(3).permuted(np.broadcast_to(np.arange(TOP_K), ids.shape), axis=1)
  again = codec.encode_topk(
      np.take_along_axis(ids, shuffle, axis=1),
      np.take_along_axis(logprobs, shuffle, axis=1).astype(np.float32),
      tail,
      vocab_size=VOCAB,
      tail_renyi_NxR=renyi,
  )
  assert again == blob


def test_decode_throughput(lm_block):
  _, _, _, _, blob, _ = lm_block
  codec.decode_topk(blob)
  started = time.perf_counter()
  repeats = 10
  for _ in range(repeats):
    codec.decode_topk(blob)
  ms_per_1k_tokens = (time.perf_counter() - started) / repeats / ROWS * 1000 * 1000
  print(f"decode: {ms_per_1k_tokens:.1f} ms per 1k tokens at k={TOP_K}")
  assert ms_per_1k_tokens < 50  # generous: a shared CI core; about 5 ms on an idle one


def test_full_vocabulary_and_minus_inf_entries():
  rng = np.random.default_rng(1)
  log_probs = lm_like_log_probs(rng, 8, 64)
  log_probs[0, :3] = -np.inf  # a teacher that masks part of its vocabulary
  ids, logprobs, tail = top_k_with_tail(log_probs, 64)
  assert np.all(np.isneginf(tail))
  decoded = codec.decode_topk(codec.encode_topk(ids, logprobs, tail, vocab_size=64))
  sorted_ids, sorted_logprobs = _by_id(ids, logprobs)
  np.testing.assert_array_equal(decoded.ids, sorted_ids)
  finite = np.isfinite(sorted_logprobs)
  assert np.abs(decoded.logprobs[finite] - sorted_logprobs[finite]).max() <= codec.DEFAULT_LOGPROB_STEP
  assert np.all(np.exp(decoded.logprobs[~finite]) < 1e-30)


def test_large_vocabulary_and_empty_block():
  rng = np.random.default_rng(2)
  ids = np.stack([rng.choice(262144, 16, replace=False) for _ in range(4)]).astype(np.int32)
  raw = -rng.exponential(3.0, (4, 16))
  logprobs = raw - np.log(np.exp(raw).sum(1, keepdims=True)) + np.log(0.75)
  tail = np.full(4, np.log(0.25))
  decoded = codec.decode_topk(codec.encode_topk(ids, logprobs, tail, vocab_size=262144))
  np.testing.assert_array_equal(decoded.ids, np.sort(ids, axis=1))
  empty = codec.decode_topk(codec.encode_topk(np.zeros((0, 16), np.int32), np.zeros((0, 16)), np.zeros(0), vocab_size=99))
  assert empty.ids.shape == (0, 16) and empty.tail_logmass.shape == (0,)


@pytest.mark.parametrize(
    "ids, logprobs, match",
    [
        ([[0, 0]], [[-1.0, -2.0]], "distinct"),
        ([[0, 99]], [[-1.0, -2.0]], "lie in"),
        ([[0, 1]], [[np.nan, -2.0]], "NaN"),
    ],
)
def test_rejects_bad_inputs(ids, logprobs, match):
  with pytest.raises(ValueError, match=match):
    codec.encode_topk(np.array(ids), np.array(logprobs), np.array([-1.0]), vocab_size=99)
  with pytest.raises(ValueError, match="not a top-k block"):
    codec.decode_topk(b"garbage-bytes-garbage-bytes-garbage")


def _record(rng, length=24, k=8, vocab=100, padding=5):
  segmentation = np.concatenate([np.ones(length - padding, np.int32), np.zeros(padding, np.int32)])
  inputs = rng.integers(1, vocab, length).astype(np.int32) * segmentation
  log_probs = lm_like_log_probs(rng, length, vocab)
  ids, logprobs, tail = top_k_with_tail(log_probs, k)
  return {
      "inputs": inputs,
      "targets": np.concatenate([inputs[1:], [0]]).astype(np.int32),
      "inputs_segmentation": segmentation,
      "targets_segmentation": segmentation,
      "inputs_position": np.arange(length, dtype=np.int32) * segmentation,
      "targets_position": np.arange(length, dtype=np.int32) * segmentation,
      "teacher_topk_ids": ids,
      "teacher_topk_logprobs": logprobs.astype(np.float32),
      "teacher_tail_logmass": tail.astype(np.float32),
      cache_format.TAIL_RENYI_FIELD: tail_renyi(log_probs, ids),
  }


def test_record_round_trip_with_padding():
  rng = np.random.default_rng(4)
  record = _record(rng)
  record["targets"][3] = 77  # targets need not equal the next input
  decoded = cache_format.decode_record(cache_format.encode_record(record, vocab_size=100), vocab_size=100)
  for name in cache_format.TOKEN_FIELDS:
    np.testing.assert_array_equal(decoded[name], record[name], err_msg=name)
    assert decoded[name].dtype == np.int32
  real = record["targets_segmentation"] != 0
  sorted_ids, sorted_logprobs = _by_id(record["teacher_topk_ids"][real], record["teacher_topk_logprobs"][real])
  np.testing.assert_array_equal(decoded["teacher_topk_ids"][real], sorted_ids)
  assert np.abs(decoded["teacher_topk_logprobs"][real] - sorted_logprobs).max() <= codec.DEFAULT_LOGPROB_STEP
  # Padding rows: the uniform distribution (finite, sums to one).
  pad_total = np.exp(decoded["teacher_topk_logprobs"][~real].astype(np.float64)).sum(1) + np.exp(
      decoded["teacher_tail_logmass"][~real].astype(np.float64)
  )
  np.testing.assert_allclose(pad_total, 1.0, rtol=1e-6)
  renyi = decoded[cache_format.TAIL_RENYI_FIELD]
  assert renyi.shape == (24, len(RENYI_ORDERS)) and renyi.dtype == np.float32
  quantum = np.log(100 - 8) / 65535
  assert np.abs(renyi[real] - record[cache_format.TAIL_RENYI_FIELD][real]).max() <= quantum / 2 + 1e-5
  np.testing.assert_allclose(renyi[~real], np.log(100 - 8), rtol=1e-6)  # a uniform tail, like the padding rows
  without = {key: value for key, value in record.items() if key != cache_format.TAIL_RENYI_FIELD}
  assert cache_format.TAIL_RENYI_FIELD not in cache_format.decode_record(
      cache_format.encode_record(without, vocab_size=100), vocab_size=100
  )


def test_manifest_round_trip_and_version_check():
  identity = cache_format.CacheIdentity(
      teacher_model="default",
      teacher_checkpoint="/ckpt/items",
      tokenizer_path="tok.model",
      tokenizer_sha256="ab",
      vocab_size=512,
      top_k=16,
      max_target_length=32,
      rows_per_step=2,
      process_count=1,
      steps_per_shard=2,
      dataset={"dataset_type": "synthetic"},
  )
  shard = cache_format.ShardInfo("f", "00", 4, 10, 100, 50, 0, 0, 0, 2)
  manifest = cache_format.Manifest(identity=identity, shards=(shard,), last_step=2, complete=True)
  assert cache_format.Manifest.from_json(manifest.to_json()) == manifest
  newer = manifest.to_json().replace(f'"format_version": {cache_format.FORMAT_VERSION}', '"format_version": 99')
  with pytest.raises(ValueError, match="format_version=99"):
    cache_format.Manifest.from_json(newer, source="x/manifest.json")
  with pytest.raises(ValueError, match="x/manifest.json"):
    cache_format.Manifest.from_json('{"format_version": 1}', source="x/manifest.json")
  # Version 1 (no tail entropies) still reads, and says so.
  old = manifest.to_json().replace(f'"format_version": {cache_format.FORMAT_VERSION}', '"format_version": 1')
  old = old.replace('  "tail_renyi_orders": [],\n', "")
  assert '"tail_renyi_orders"' not in old
  read = cache_format.Manifest.from_json(old)
  assert read.format_version == 1 and isinstance(read.identity.tail_renyi_orders, tuple)
  assert not read.identity.tail_renyi_orders
  v2 = dataclasses.replace(manifest, identity=dataclasses.replace(identity, tail_renyi_orders=RENYI_ORDERS))
  assert cache_format.Manifest.from_json(v2.to_json()).identity.tail_renyi_orders == RENYI_ORDERS
  assert dataclasses.replace(identity, top_k=8) != identity
