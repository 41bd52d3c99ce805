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

"""Reads caches written by MaxText's own ``save_top_k_teacher_logits.py`` and converts them.

Upstream writes ``teacher_top_k_part_{P:05d}_host_{H:03d}.array_record`` files, one
serialized ``tf.train.Example`` per sequence with int64 features ``inputs``,
``top_k_indices`` (``S*k``), ``sequence_hash`` and optionally ``targets``,
``inputs_position``, ``inputs_segmentation``, ``targets_segmentation``, and the
float feature ``top_k_logits`` (``S*k`` raw logits, best first). No tail mass is
stored: a converted cache holds the teacher renormalised over its top-k (tail
log-mass ``-inf``, ``tail_logmass_known=False`` in the manifest), so train it with
``tail="renormalize"``.

The protobuf wire format is parsed here directly (TensorFlow is not needed):
``Example{1: Features{1: map<string, Feature{1: BytesList, 2: FloatList, 3: Int64List}>}}``.

Training reads upstream's files in place; to convert them once (checksums, manifest, ``teacher_cache.verify``)::

  python -m maxtext_distill_plugin.teacher_cache.upstream_interop SRC_DIR DST_DIR --vocab-size V
"""

import argparse
import glob
import hashlib
import os
import re

from array_record.python import array_record_module
import numpy as np

from maxtext_distill_plugin.teacher_cache import format as cache_format
from maxtext_distill_plugin.teacher_cache import reader as cache_reader
from maxtext_distill_plugin.teacher_cache import writer as cache_writer

UPSTREAM_FILE_PATTERN = re.compile(r"teacher_top_k_part_(\d+)_host_(\d+)\.array_record$")
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    if pos >= len(buf):
      raise ValueError("truncated protobuf varint")
    byte = buf[pos]
    value |= (byte & 0x7F) << shift
    pos += 1
    if byte < 0x80:
      return value, pos
    shift += 7


def _fields(buf: bytes, start: int, end: int):
  """Yields ``(field number, wire type, value)``; value is an int, or ``(start, end)`` for length-delimited."""
  pos = start
  while pos < end:
    key, pos = _read_varint(buf, pos)
    number, wire_type = key >> 3, key & 7
    if wire_type == _VARINT:
      value, pos = _read_varint(buf, pos)
    elif wire_type == _LENGTH_DELIMITED:
      length, pos = _read_varint(buf, pos)
      value, pos = (pos, pos + length), pos + length
    elif wire_type in (_FIXED32, _FIXED64):
      width = 4 if wire_type == _FIXED32 else 8
      value, pos = (pos, pos + width), pos + width
    else:
      raise ValueError(f"unsupported protobuf wire type {wire_type} (field {number})")
    if pos > end:
      raise ValueError("truncated protobuf message")
    yield number, wire_type, value


def decode_packed_varints(data: bytes) -> np.ndarray:
  """Vectorised decoding of concatenated varints into int64 (two's complement, as protobuf int64)."""
  raw = np.frombuffer(data, np.uint8)
  if raw.size == 0:
    return np.zeros(0, np.int64)
  if raw[-1] >= 0x80:
    raise ValueError("truncated packed varints")
  ends = np.flatnonzero(raw < 0x80)
  starts = np.concatenate([[0], ends[:-1] + 1])
  shifts = (np.arange(raw.size) - np.repeat(starts, ends - starts + 1)) * 7
  if shifts.max() > 63:
    raise ValueError("varint longer than 10 bytes")
  parts = (raw & 0x7F).astype(np.uint64) << shifts.astype(np.uint64)
  return np.bitwise_or.reduceat(parts, starts).view(np.int64)


def _feature_values(buf: bytes, start: int, end: int) -> np.ndarray:
  for kind, _, (list_start, list_end) in _fields(buf, start, end):
    values = []
    for number, wire_type, value in _fields(buf, list_start, list_end):
      if number != 1:
        continue
      if kind == 2 and wire_type == _LENGTH_DELIMITED:
        values.append(np.frombuffer(buf[value[0] : value[1]], "<f4"))
      elif kind == 2 and wire_type == _FIXED32:
        values.append(np.frombuffer(buf[value[0] : value[1]], "<f4"))
      elif kind == 3 and wire_type == _LENGTH_DELIMITED:
        values.append(decode_packed_varints(buf[value[0] : value[1]]))
      elif kind == 3 and wire_type == _VARINT:
        values.append(np.array([value], np.uint64).view(np.int64))
      elif kind == 1:
        values.append(np.array([buf[value[0] : value[1]]], object))
    dtype = {1: object, 2: np.float32, 3: np.int64}.get(kind, object)
    return np.concatenate(values) if values else np.zeros(0, dtype)
  return np.zeros(0, np.float32)


def parse_example(record: bytes) -> dict[str, np.ndarray]:
  """A serialized ``tf.train.Example`` as ``{feature name: 1-D array}`` (float32, int64 or bytes objects)."""
  features = {}
  for number, wire_type, span in _fields(record, 0, len(record)):
    if number != 1 or wire_type != _LENGTH_DELIMITED:
      continue
    for entry_number, _, (entry_start, entry_end) in _fields(record, *span):
      if entry_number != 1:
        continue
      name, value_span = None, (entry_start, entry_start)
      for field, _, field_span in _fields(record, entry_start, entry_end):
        if field == 1:
          name = record[field_span[0] : field_span[1]].decode("utf-8")
        elif field == 2:
          value_span = field_span
      features[name] = _feature_values(record, *value_span)
  return features


def upstream_record_to_arrays(record: bytes, *, source: str = "record") -> dict[str, np.ndarray]:
  """One upstream record as our record dict, the teacher renormalised over its top-k (tail ``-inf``)."""
  features = parse_example(record)
  for required in ("inputs", "targets", "top_k_logits", "top_k_indices"):
    if required not in features:
      raise ValueError(f"{source}: feature {required!r} is missing (found {sorted(features)})")
  length = features["inputs"].size
  if (
      length == 0
      or features["top_k_indices"].size % length
      or features["top_k_logits"].size != features["top_k_indices"].size
  ):
    raise ValueError(f"{source}: top-k features of size {features['top_k_indices'].size} do not fit {length} tokens")
  k = features["top_k_indices"].size // length
  logits = features["top_k_logits"].reshape(length, k).astype(np.float64)
  peak = logits.max(axis=1, keepdims=True)
  logprobs = logits - peak - np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))
  arrays = {
      "inputs": features["inputs"],
      "targets": features["targets"],
      "inputs_position": features.get("inputs_position", np.arange(length)),
      "targets_position": features.get("targets_position", features.get("inputs_position", np.arange(length))),
      "inputs_segmentation": features.get("inputs_segmentation", np.ones(length)),
      "targets_segmentation": features.get("targets_segmentation", np.ones(length)),
  }
  arrays = {name: np.asarray(value).astype(np.int32) for name, value in arrays.items()}
  arrays.update(
      teacher_topk_ids=features["top_k_indices"].reshape(length, k).astype(np.int32),
      teacher_topk_logprobs=logprobs.astype(np.float32),
      teacher_tail_logmass=np.full(length, -np.inf, np.float32),
  )
  return arrays


def upstream_files(src_dir: str) -> list[tuple[int, int, str]]:
  """``(part, host, path)`` of upstream's shard files, sorted."""
  found = []
  for path in glob.glob(os.path.join(src_dir, "*.array_record")):
    match = UPSTREAM_FILE_PATTERN.search(os.path.basename(path))
    if match:
      found.append((int(match.group(1)), int(match.group(2)), path))
  if not found:
    raise FileNotFoundError(f"{src_dir}: no teacher_top_k_part_*_host_*.array_record files (upstream's naming)")
  return sorted(found)


def convert_upstream(src_dir: str, dst_dir: str, manifest_fields: dict) -> cache_format.Manifest:
  """Converts an upstream cache into this plugin's format.

  Args:
    src_dir: directory of upstream's ``teacher_top_k_part_*_host_*.array_record`` files.
    dst_dir: new cache directory.
    manifest_fields: :class:`CacheIdentity` fields; ``vocab_size`` is required (upstream does not
      record it). ``top_k``, ``max_target_length`` and ``process_count`` are taken from the data;
      ``rows_per_step`` defaults to 1 and ``steps_per_shard`` to the records of the first file.

  Returns:
    The written (complete) manifest.
  """
  if "vocab_size" not in manifest_fields:
    raise ValueError("manifest_fields needs vocab_size: upstream's files do not record it")
  files = upstream_files(src_dir)
  os.makedirs(dst_dir, exist_ok=True)
  shards, shape = [], None
  for part, host, path in files:
    name = cache_format.shard_name(part, host)
    temp = os.path.join(dst_dir, name + ".tmp")
    sink = array_record_module.ArrayRecordWriter(temp, cache_writer.ARRAY_RECORD_OPTIONS)
    records = tokens = topk_bytes = 0
    for index, raw in cache_reader.iter_shard_records(path):
      arrays = upstream_record_to_arrays(raw, source=f"{path} record {index}")
      shape = shape or arrays["teacher_topk_ids"].shape
      if arrays["teacher_topk_ids"].shape != shape:
        raise ValueError(f"{path} record {index}: top-k shape {arrays['teacher_topk_ids'].shape}, expected {shape}")
      encoded = cache_format.encode_record(arrays, vocab_size=int(manifest_fields["vocab_size"]))
      sink.write(encoded)
      records, tokens = records + 1, tokens + int(np.count_nonzero(arrays["targets_segmentation"]))
      topk_bytes += cache_format.record_topk_bytes(encoded)
    sink.close()
    shards.append((part, host, name, temp, records, tokens, topk_bytes))
  first_records = shards[0][4]
  defaults = {
      "teacher_model": "unknown (upstream cache)",
      "teacher_checkpoint": "unknown",
      "tokenizer_path": "unknown",
      "tokenizer_sha256": "",
      "rows_per_step": 1,
      "steps_per_shard": max(first_records, 1),
      "dataset": {"converted_from": os.path.abspath(src_dir)},
  }
  identity = cache_format.CacheIdentity(**{
      **defaults,
      **manifest_fields,
      "top_k": shape[1],
      "max_target_length": shape[0],
      "process_count": len({host for _, host, _ in files}),
      "tail_logmass_known": False,
  })
  infos, steps_per_record = [], 1.0 / identity.rows_per_step
  for part, host, name, temp, records, tokens, topk_bytes in shards:
    first_step = part * identity.steps_per_shard
    infos.append(
        cache_format.ShardInfo(
            file=name,
            sha256=cache_writer.file_sha256(temp),
            records=records,
            bytes=os.path.getsize(temp),
            tokens=tokens,
            topk_bytes=topk_bytes,
            part=part,
            host=host,
            first_step=first_step,
            last_step=first_step + int(records * steps_per_record),
        )
    )
    os.replace(temp, os.path.join(dst_dir, name))
  last_step = min(max(s.last_step for s in infos if s.host == h) for h in {s.host for s in infos})
  manifest = cache_format.Manifest(
      identity=identity, shards=tuple(infos), first_step=0, last_step=last_step, complete=True
  )
  cache_format.write_json_atomically(os.path.join(dst_dir, cache_format.MANIFEST_NAME), manifest.to_json())
  return manifest


class UpstreamCache:
  """Reads upstream's files in place, with the interface of :class:`reader.TeacherCache` (no conversion needed).

  Upstream stores no tail mass, so it always trains with ``tail="renormalize"``.
  """

  def __init__(self, directory: str):
    self.directory = directory
    self._paths = [path for _, _, path in upstream_files(directory)]
    counts = []
    for path in self._paths:
      reader = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")
      counts.append(reader.num_records())
      reader.close()
    self._starts = np.cumsum([0] + counts).tolist()
    self._readers: dict[int, array_record_module.ArrayRecordReader] = {}
    first = self[0]
    self.top_k = int(first["teacher_topk_ids"].shape[-1])
    self.max_target_length = int(first["inputs"].shape[0])
    self.tail_logmass_known = False

  def __len__(self) -> int:
    return self._starts[-1]

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} is outside [0, {len(self)}) of {self.directory}")
    shard = int(np.searchsorted(self._starts, index, side="right")) - 1
    if shard not in self._readers:
      self._readers[shard] = array_record_module.ArrayRecordReader(self._paths[shard], "readahead_buffer_size:0")
    record = self._readers[shard].read([index - self._starts[shard]])[0]
    return upstream_record_to_arrays(record, source=f"{self._paths[shard]}[{index - self._starts[shard]}]")

  def __getitems__(self, indices) -> list[dict[str, np.ndarray]]:
    return [self[i] for i in indices]


def main(argv: list[str] | None = None) -> None:
  """Command line of :func:`convert_upstream`; prints the written manifest's summary."""
  parser = argparse.ArgumentParser(description="Convert MaxText's save_top_k_teacher_logits.py output to a cache.")
  parser.add_argument("src_dir", help="directory of upstream's teacher_top_k_part_*_host_*.array_record files")
  parser.add_argument("dst_dir", help="new cache directory (manifest.json and shards)")
  parser.add_argument("--vocab-size", type=int, required=True, help="the teacher's vocab_size (upstream stores none)")
  parser.add_argument("--tokenizer-path", default="unknown", help="recorded; a file's sha256 is checked at training")
  parser.add_argument("--teacher-model", default="unknown (upstream cache)")
  parser.add_argument("--teacher-checkpoint", default="unknown")
  parser.add_argument("--rows-per-step", type=int, default=1, help="sequences per global batch (default 1)")
  args = parser.parse_args(argv)
  fields = {
      "vocab_size": args.vocab_size,
      "tokenizer_path": args.tokenizer_path,
      "teacher_model": args.teacher_model,
      "teacher_checkpoint": args.teacher_checkpoint,
      "rows_per_step": args.rows_per_step,
  }
  if os.path.isfile(args.tokenizer_path):
    with open(args.tokenizer_path, "rb") as f:
      fields["tokenizer_sha256"] = hashlib.sha256(f.read()).hexdigest()
  manifest = convert_upstream(args.src_dir, args.dst_dir, fields)
  records = sum(shard.records for shard in manifest.shards)
  print(
      f"{args.dst_dir}: {records} sequences in {len(manifest.shards)} shards, k={manifest.identity.top_k},"
      f" length {manifest.identity.max_target_length}; train with distill_offline_tail=renormalize."
  )


if __name__ == "__main__":
  main()
