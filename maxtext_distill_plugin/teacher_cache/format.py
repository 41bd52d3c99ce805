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

"""On-disk format of a teacher cache, version 2: the manifest and the record layout.

A cache is a directory::

  manifest.json                                   what the reader trusts (written last)
  progress_host{H:03d}.json                       per-host list of finished shards (resume)
  teacher_topk_part{P:05d}_host{H:03d}.array_record   shards: one record per sequence

Record layout (little-endian)::

  b"TKR1" | u32 S | u32 len(tokens section) | tokens section | top-k block (codec)

The tokens section is zlib over the byte planes of six int32 ``[S]`` arrays, each
first made small: ``inputs`` as is, ``targets - next(inputs)``, and the differences
of the segmentations and positions. The top-k block codes only the rows whose
``targets_segmentation`` is non-zero (real tokens); padding rows decode as the
uniform distribution over the vocabulary so that no NaN can reach a loss.

Version 2 adds per token the Renyi entropies of the teacher's tail at the orders
``tail_renyi_orders`` of the manifest (``tau = 1/T`` in {1/4, 1/2, 1, 2}; 2 bytes
each before compression), decoded as ``teacher_tail_renyi`` ``[S, R]``: with them
the offline loss is exact at T != 1. Version-1 caches are still read (no
``teacher_tail_renyi``; exact at T = 1 only, so the config check refuses them for a
bucket tail at any other T).
"""

import dataclasses
import json
import os
import struct
import zlib

import numpy as np

from maxtext_distill_plugin.teacher_cache import codec

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
TOKEN_FIELDS = (
    "inputs",
    "targets",
    "inputs_segmentation",
    "targets_segmentation",
    "inputs_position",
    "targets_position",
)
TEACHER_FIELDS = ("teacher_topk_ids", "teacher_topk_logprobs", "teacher_tail_logmass")
TAIL_RENYI_FIELD = "teacher_tail_renyi"  # format 2: [S, R] float32, absent from version-1 records
_RECORD_MAGIC = b"TKR1"
_RECORD_HEADER = struct.Struct("<4sII")


def shard_name(part: int, process_index: int) -> str:
  return f"teacher_topk_part{part:05d}_host{process_index:03d}.array_record"


def progress_name(process_index: int) -> str:
  return f"progress_host{process_index:03d}.json"


@dataclasses.dataclass(frozen=True)
class ShardInfo:
  """One finished shard: written by one host, covering ``steps_per_shard`` batches."""

  file: str
  sha256: str
  records: int
  bytes: int
  tokens: int  # real (non-padding) target tokens
  topk_bytes: int  # coded top-k blocks alone, for bytes/token
  part: int
  host: int
  first_step: int
  last_step: int  # exclusive


@dataclasses.dataclass(frozen=True)
class CacheIdentity:
  """What the cached values depend on; a resumed run must match it exactly."""

  teacher_model: str
  teacher_checkpoint: str
  tokenizer_path: str
  tokenizer_sha256: str
  vocab_size: int
  top_k: int
  max_target_length: int
  rows_per_step: int  # sequences per batch per host
  process_count: int
  steps_per_shard: int
  logprob_step: float = codec.DEFAULT_LOGPROB_STEP
  tail_logmass_known: bool = True  # False for caches converted from upstream (no tail was stored)
  tail_renyi_orders: tuple = ()  # tau = 1/T of the stored tail Renyi entropies; () for version 1 and upstream
  dataset: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Manifest:
  """The trusted description of a cache directory."""

  identity: CacheIdentity
  shards: tuple[ShardInfo, ...] = ()
  first_step: int = 0
  last_step: int = 0  # exclusive; the global batches covered are [first_step, last_step)
  complete: bool = False
  format_version: int = FORMAT_VERSION

  @property
  def records(self) -> int:
    return sum(s.records for s in self.shards)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

  @classmethod
  def from_json(cls, text: str, *, source: str = MANIFEST_NAME) -> "Manifest":
    """Parses and checks a manifest; errors name ``source``."""
    try:
      raw = json.loads(text)
      version = raw.get("format_version")
      if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{source}: format_version={version!r}, this plugin reads versions {READABLE_VERSIONS}. Fix: rewrite the"
            " cache with this plugin's save_top_k_teacher_logits, or use the plugin version that wrote it."
        )
      identity = CacheIdentity(**raw["identity"])
      identity = dataclasses.replace(identity, tail_renyi_orders=tuple(identity.tail_renyi_orders))
      shards = tuple(ShardInfo(**s) for s in raw["shards"])
      return cls(
          identity=identity,
          shards=shards,
          first_step=int(raw["first_step"]),
          last_step=int(raw["last_step"]),
          complete=bool(raw["complete"]),
          format_version=int(version),
      )
    except (KeyError, TypeError, json.JSONDecodeError) as e:
      raise ValueError(f"{source}: not a valid teacher-cache manifest ({type(e).__name__}: {e})") from e


def write_json_atomically(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a temp file and a rename: readers never see half a file."""
  temp = f"{path}.tmp"
  with open(temp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temp, path)


def read_manifest(directory: str) -> Manifest:
  path = os.path.join(directory, MANIFEST_NAME)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} does not exist: {directory} is not a finished teacher cache. Fix: run"
        " `python -m maxtext_distill_plugin.save_top_k_teacher_logits <config.yml> offline_data_dir=<dir>` first."
    )
  with open(path, encoding="utf-8") as f:
    return Manifest.from_json(f.read(), source=path)


def _token_transforms(arrays: dict) -> list[np.ndarray]:
  inputs = arrays["inputs"]
  next_inputs = np.concatenate([inputs[1:], np.zeros(1, np.int32)])
  return [
      inputs,
      arrays["targets"] - next_inputs,
      np.diff(arrays["inputs_segmentation"], prepend=np.int32(0)),
      np.diff(arrays["targets_segmentation"], prepend=np.int32(0)),
      np.diff(arrays["inputs_position"], prepend=np.int32(0)),
      np.diff(arrays["targets_position"], prepend=np.int32(0)),
  ]


def encode_record(arrays: dict, *, vocab_size: int, logprob_step: float = codec.DEFAULT_LOGPROB_STEP) -> bytes:
  """Serialises one sequence: the six ``[S]`` token arrays, the teacher's ``[S, k]`` top-k and ``[S]`` tail, and
  optionally its ``[S, R]`` tail Renyi entropies."""
  renyi = arrays.get(TAIL_RENYI_FIELD)
  arrays = {name: np.asarray(arrays[name]) for name in TOKEN_FIELDS + TEACHER_FIELDS}
  length = arrays["inputs"].shape[0]
  for name in TOKEN_FIELDS:
    if arrays[name].shape != (length,):
      raise ValueError(f"{name} has shape {arrays[name].shape}, expected ({length},) like inputs")
    arrays[name] = arrays[name].astype(np.int32)
  stacked = np.stack(_token_transforms(arrays)).astype("<i4")
  planes = stacked.view(np.uint8).reshape(len(TOKEN_FIELDS), length, 4).transpose(0, 2, 1)
  tokens_section = zlib.compress(np.ascontiguousarray(planes).tobytes(), 6)
  real = arrays["targets_segmentation"] != 0
  block = codec.encode_topk(
      arrays["teacher_topk_ids"][real],
      arrays["teacher_topk_logprobs"][real],
      arrays["teacher_tail_logmass"][real],
      vocab_size=vocab_size,
      logprob_step=logprob_step,
      tail_renyi_NxR=None if renyi is None else np.asarray(renyi)[real],
  )
  return _RECORD_HEADER.pack(_RECORD_MAGIC, length, len(tokens_section)) + tokens_section + block


def record_topk_bytes(record: bytes) -> int:
  """Size of the coded top-k block inside a record."""
  _, _, tokens_bytes = _RECORD_HEADER.unpack_from(record)
  return len(record) - _RECORD_HEADER.size - tokens_bytes


def decode_record(record: bytes, *, vocab_size: int) -> dict[str, np.ndarray]:
  """Inverse of :func:`encode_record`; padding rows get the uniform distribution (and a uniform tail)."""
  magic, length, tokens_bytes = _RECORD_HEADER.unpack_from(record)
  if magic != _RECORD_MAGIC:
    raise ValueError(f"not a teacher-cache record (magic {magic!r}, expected {_RECORD_MAGIC!r})")
  start = _RECORD_HEADER.size
  planes = np.frombuffer(zlib.decompress(record[start : start + tokens_bytes]), np.uint8)
  stacked = planes.reshape(len(TOKEN_FIELDS), 4, length).transpose(0, 2, 1).copy().view("<i4")[..., 0]
  out = {name: stacked[i].astype(np.int32) for i, name in enumerate(TOKEN_FIELDS)}
  for name in TOKEN_FIELDS[2:]:
    out[name] = np.cumsum(out[name], dtype=np.int32)
  out["targets"] = out["targets"] + np.concatenate([out["inputs"][1:], np.zeros(1, np.int32)])
  topk = codec.decode_topk(record[start + tokens_bytes :])
  real = out["targets_segmentation"] != 0
  k = topk.ids.shape[1]
  if int(real.sum()) != topk.ids.shape[0]:
    raise ValueError(f"record holds {topk.ids.shape[0]} top-k rows for {int(real.sum())} real tokens")
  ids = np.broadcast_to(np.arange(k, dtype=np.int32), (length, k)).copy()
  logprobs = np.full((length, k), -np.log(vocab_size), np.float32)
  tail = np.full((length,), codec.log1mexp(np.log(k / vocab_size)) if k < vocab_size else -np.inf, np.float32)
  ids[real], logprobs[real], tail[real] = topk.ids, topk.logprobs, topk.tail_logmass
  out.update(teacher_topk_ids=ids, teacher_topk_logprobs=logprobs, teacher_tail_logmass=tail)
  if topk.tail_renyi is not None:
    renyi = np.full((length, topk.tail_renyi.shape[1]), np.log(max(vocab_size - k, 1)), np.float32)
    renyi[real] = topk.tail_renyi
    out[TAIL_RENYI_FIELD] = renyi
  return out
