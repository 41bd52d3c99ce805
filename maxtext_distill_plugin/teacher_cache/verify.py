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

"""Checks a teacher cache: checksums, counts, sizes, and agreement with a live teacher.

Every shard is hashed, whatever this host remembers of earlier checks, and the
host's record of verified shards (:mod:`verified`) is refreshed with the result.

``python -m maxtext_distill_plugin.teacher_cache.verify <cache_dir>`` prints a JSON
report and exits non-zero when a check fails.
"""

import json
import os
import sys
from typing import Callable

from array_record.python import array_record_module
import numpy as np

from maxtext_distill_plugin.teacher_cache import format as cache_format
from maxtext_distill_plugin.teacher_cache import reader as cache_reader
from maxtext_distill_plugin.teacher_cache import verified


def verify_cache(directory: str, *, decode: bool = True) -> dict:
  """Checks every shard's sha256, size and record count, and decodes every record.

  Args:
    directory: the cache directory.
    decode: also decode each record and check its shapes against the manifest.

  Returns:
    A report: shard/record/token counts, ``bytes_per_token`` (shard files) and
    ``topk_bytes_per_token`` (coded top-k blocks alone), ``complete``.

  Raises:
    CacheIntegrityError: naming the file and the expected and actual values.
  """
  manifest = cache_format.read_manifest(directory)
  identity = manifest.identity
  memo = verified.ShardMemo(directory)  # refreshed, so that training opens skip what is checked here
  try:
    for shard in manifest.shards:
      _verify_shard(directory, shard, identity, memo, decode=decode)
  finally:
    memo.save()
  tokens = sum(s.tokens for s in manifest.shards)
  return {
      "directory": directory,
      "complete": manifest.complete,
      "steps": [manifest.first_step, manifest.last_step],
      "shards": len(manifest.shards),
      "records": manifest.records,
      "tokens": tokens,
      "top_k": identity.top_k,
      "vocab_size": identity.vocab_size,
      "bytes": sum(s.bytes for s in manifest.shards),
      "bytes_per_token": sum(s.bytes for s in manifest.shards) / max(tokens, 1),
      "topk_bytes_per_token": sum(s.topk_bytes for s in manifest.shards) / max(tokens, 1),
  }


def _verify_shard(directory: str, shard, identity, memo: verified.ShardMemo, *, decode: bool) -> None:
  """Every check of one shard, always hashing it; the memo remembers it only when all pass."""
  memo.forget(shard.file)
  cache_reader.check_shard(directory, shard, checksum=True)
  path = os.path.join(directory, shard.file)
  records = array_record_module.ArrayRecordReader(path)
  count = records.num_records()
  records.close()
  if count != shard.records:
    raise cache_reader.CacheIntegrityError(f"{path}: record count expected {shard.records}, actual {count}")
  if decode:
    for offset, raw in cache_reader.iter_shard_records(path):
      _check_record(path, offset, cache_format.decode_record(raw, vocab_size=identity.vocab_size), identity)
  memo.remember(shard.file, shard.sha256)


def _check_record(path: str, offset: int, record: dict, identity: cache_format.CacheIdentity) -> None:
  length, k = identity.max_target_length, identity.top_k
  expected = {"teacher_topk_ids": (length, k), "teacher_topk_logprobs": (length, k), "teacher_tail_logmass": (length,)}
  expected.update({name: (length,) for name in cache_format.TOKEN_FIELDS})
  for name, shape in expected.items():
    if record[name].shape != shape:
      raise cache_reader.CacheIntegrityError(
          f"{path} record {offset}: {name} shape expected {shape}, actual {record[name].shape}"
      )


def bucketed_kl(reference_logp_SxV: np.ndarray, ids_SxK: np.ndarray, logprobs_SxK: np.ndarray, tail_S: np.ndarray):
  """KL(reference || stored) per row, both seen as k+1 buckets: the k ids and everything else.

  Args:
    reference_logp_SxV: ``[S, V]`` full log-probabilities (the live teacher).
    ids_SxK: ``[S, k]`` stored ids.
    logprobs_SxK: ``[S, k]`` stored log-probabilities.
    tail_S: ``[S]`` stored tail log-mass.

  Returns:
    ``[S]`` float64 KL in nats.
  """
  reference = np.asarray(reference_logp_SxV, np.float64)
  at_ids = np.take_along_axis(reference, ids_SxK, axis=1)
  others = reference.copy()
  np.put_along_axis(others, ids_SxK, -np.inf, axis=1)
  peak = np.max(others, axis=1, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    outside = np.where(np.isfinite(peak[:, 0]), peak[:, 0] + np.log(np.exp(others - peak).sum(axis=1)), -np.inf)
  reference_buckets = np.concatenate([at_ids, outside[:, None]], axis=1)
  stored_buckets = np.concatenate([logprobs_SxK, tail_S[:, None]], axis=1).astype(np.float64)
  p = np.exp(reference_buckets)
  with np.errstate(invalid="ignore"):
    terms = np.where(p > 0, p * (reference_buckets - stored_buckets), 0.0)
  return terms.sum(axis=1)


def compare_with_live(
    cache: cache_reader.TeacherCache, live_logprobs_fn: Callable[[dict], np.ndarray], n: int, *, seed: int = 0
) -> dict:
  """Recomputes the teacher for ``n`` sampled sequences and measures the cache's error on real tokens.

  Args:
    cache: an opened cache.
    live_logprobs_fn: ``record -> [S, V]`` full teacher log-probabilities at T=1 for the record's inputs.
    n: number of sequences (sampled without replacement with ``seed``).
    seed: sampling seed.

  Returns:
    ``max_abs_logprob_error`` on the stored ids, ``mean_kl``/``max_kl`` at T=1 over
    tokens (live k+1-bucket distribution vs stored), ``topk_id_agreement`` (share of
    tokens whose live top-k set equals the stored one; ties may differ), and ``tokens``.
  """
  rng = np.random.default_rng(seed)
  indices = np.sort(rng.choice(len(cache), size=min(n, len(cache)), replace=False))
  max_error, kls, agreements = 0.0, [], []
  for index in indices:
    record = cache[int(index)]
    real = record["targets_segmentation"] != 0
    live = np.asarray(live_logprobs_fn(record), np.float64)[real]
    ids, logprobs = record["teacher_topk_ids"][real], record["teacher_topk_logprobs"][real]
    if ids.size:
      max_error = max(max_error, float(np.abs(np.take_along_axis(live, ids, axis=1) - logprobs).max()))
    kls.append(bucketed_kl(live, ids, logprobs, record["teacher_tail_logmass"][real]))
    live_top = np.sort(np.argsort(-live, axis=1, kind="stable")[:, : cache.top_k], axis=1)
    agreements.append((live_top == ids).all(axis=1))
  kl = np.concatenate(kls) if kls else np.zeros(0)
  return {
      "sequences": len(indices),
      "tokens": int(kl.size),
      "max_abs_logprob_error": max_error,
      "mean_kl": float(kl.mean()) if kl.size else 0.0,
      "max_kl": float(kl.max()) if kl.size else 0.0,
      "topk_id_agreement": float(np.concatenate(agreements).mean()) if kl.size else 1.0,
  }


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print("usage: python -m maxtext_distill_plugin.teacher_cache.verify <cache_dir>", file=sys.stderr)
    return 2
  try:
    report = verify_cache(argv[1])
  except (ValueError, FileNotFoundError) as e:
    print(f"verify: FAILED: {e}", file=sys.stderr)
    return 1
  print(json.dumps(report, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
