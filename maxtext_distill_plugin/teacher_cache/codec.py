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

"""Compact, deterministic coding of a teacher's top-k distribution (pure NumPy + zlib).

One block holds ``N`` token rows, each: the ``k`` top ids, their log-probabilities
at T=1, the log of the remaining (tail) mass and (block version 2) ``R`` Renyi
entropies of the tail, which make the tempered tail exact at T != 1
(:mod:`maxtext_distill_plugin.loss.sparse_losses`). Layout of the coded values:

* **ids** (lossless): each row is sorted by id and turned into gaps
  ``g = id[j] - id[j-1] - 1`` (``id[-1] = -1``). A gap is split into ``s`` low bits,
  near-uniform and stored bit-packed, and a high part ``g >> s``, small and
  geometric, stored as byte planes and entropy-coded. ``s`` is picked per block
  among a few candidates around ``log2(mean gap)``, whichever codes smallest.
* **log-probs**: ``level = round((max_row - logprob) / step)`` (the row's top-1 is
  level 0, exact up to renormalisation). Per row the largest level ``M`` is stored,
  and each entry as ``M - level``: most of the top-k sits just above the k-th value,
  so these numbers are small for every row, whatever the row's dynamic range.
  Decoding rebuilds ``logprob = -level * step + c`` with ``c`` set so that the top-k
  and the tail sum to exactly one. Each log-prob is off by at most ``step / 2`` before
  that shift and ``step`` after it; the errors span an interval of width ``step``
  (the tail's is 0), so by Hoeffding's lemma KL@T=1 to the original k+1-bucket
  distribution is at most ``step^2 / 8`` (4.9e-4 nats at the default 1/16); on
  LM-like rows it is ~4e-5 (the top-1, which carries most mass, is exact).
* **tail log-mass**: float32, stored exactly.
* **tail Renyi entropies** ``H`` ``[N, R]``, non-increasing along R and within
  ``[0, log(V - k)]``: ``level = round(H / log(V - k) * 65535)`` (error at most
  ``log(V - k) / 2^17``, 8e-5 nats at V=32k), stored as the first order's level and
  then each order's decrease from the previous one (small numbers, which the
  byte planes compress), order-major. Version-1 blocks (``TKB1``) have none.

Integer planes are little-endian byte planes (plane-major) compressed with zlib's
run-length strategy: fast in both directions and close to the zeroth-order entropy
on these planes. Same inputs give the same bytes. The row order of ids in the
output is ascending id, not rank; logprobs follow their ids.
"""

import dataclasses
import struct
import zlib

import numpy as np

DEFAULT_LOGPROB_STEP = 1.0 / 16.0
_MAGIC = b"TKB2"
_MAGIC_V1 = b"TKB1"  # no Renyi entropies; still decoded
_HEADER = struct.Struct("<4sBHIIfB")  # magic, low_bits, k, rows, vocab_size, logprob_step, renyi orders R
_HEADER_V1 = struct.Struct("<4sBHIIf")
_SECTIONS = ("tail", "gap_high", "gap_low", "row_max_level", "level_offsets", "tail_renyi")
_SECTION_LENGTHS = struct.Struct(f"<{len(_SECTIONS)}I")
_SECTION_LENGTHS_V1 = struct.Struct(f"<{len(_SECTIONS) - 1}I")
_MAX_LEVEL = np.iinfo(np.uint16).max
_RENYI_LEVELS = np.iinfo(np.uint16).max
_ZLIB_LEVEL = 6


@dataclasses.dataclass(frozen=True)
class TopK:
  """A decoded block. ``ids`` ascending per row.

  Attributes:
    ids: ``[N, k]`` int32 vocabulary ids, ascending within each row.
    logprobs: ``[N, k]`` float32 log-probabilities at T=1 of those ids.
    tail_logmass: ``[N]`` float32 ``log(1 - sum(exp(logprobs)))``; ``-inf`` when k = V.
    tail_renyi: ``[N, R]`` float32 Renyi entropies of the tail, or None (a version-1 block, or none stored).
  """

  ids: np.ndarray
  logprobs: np.ndarray
  tail_logmass: np.ndarray
  tail_renyi: np.ndarray | None = None


def _compress(raw: bytes) -> bytes:
  compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
  return compressor.compress(raw) + compressor.flush()


def _decompress(blob: bytes) -> bytes:
  return zlib.decompress(blob, -15)


def _pack_uint_planes(values: np.ndarray) -> bytes:
  """Unsigned ints as one width byte, then the byte planes (lowest byte first), compressed."""
  peak = int(values.max()) if values.size else 0
  width = 1 if peak < 1 << 8 else 2 if peak < 1 << 16 else 4
  as_bytes = values.astype(f"<u{width}").view(np.uint8).reshape(-1, width)
  return bytes([width]) + _compress(np.ascontiguousarray(as_bytes.T).tobytes())


def _unpack_uint_planes(blob: bytes, count: int) -> np.ndarray:
  width = blob[0]
  planes = np.frombuffer(_decompress(blob[1:]), np.uint8).reshape(width, count)
  return np.ascontiguousarray(planes.T).view(f"<u{width}").reshape(count).astype(np.int64 if width == 4 else np.int32)


def _pack_low_bits(values: np.ndarray, bits: int) -> bytes:
  """The ``bits`` low bits of each value, bit-packed MSB first (incompressible, stored raw)."""
  if bits == 0:
    return b""
  shifts = np.arange(bits - 1, -1, -1, dtype=np.int32)
  return np.packbits(((values[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


def _unpack_low_bits(blob: bytes, bits: int, count: int) -> np.ndarray:
  if bits == 0:
    return np.zeros(count, np.int32)
  # Each value lies inside the 24-bit big-endian window starting at its first byte (bits <= 16).
  padded = np.frombuffer(blob + b"\0\0", np.uint8).astype(np.int32)
  windows = (padded[:-2] << 16) | (padded[1:-1] << 8) | padded[2:]
  first_bit = np.arange(count, dtype=np.int32) * bits
  return (windows[first_bit >> 3] >> (24 - bits - (first_bit & 7))) & ((1 << bits) - 1)


def _code_gaps(gaps: np.ndarray) -> tuple[int, bytes, bytes]:
  """Picks the low-bit count that codes the gaps smallest; returns (bits, high part, low part)."""
  mean_gap = float(gaps.mean()) if gaps.size else 0.0
  center = int(np.floor(np.log2(mean_gap))) if mean_gap >= 1.0 else 0
  candidates = sorted({min(max(b, 0), 15) for b in (center - 1, center, center + 1)})
  high_parts = {bits: _pack_uint_planes(gaps >> bits) for bits in candidates}
  bits = min(candidates, key=lambda b: len(high_parts[b]) + (gaps.size * b + 7) // 8)
  return bits, high_parts[bits], _pack_low_bits(gaps & ((1 << bits) - 1), bits)


def _check_inputs(ids_NxK, logprobs_NxK, tail_N, vocab_size):
  if ids_NxK.ndim != 2 or logprobs_NxK.shape != ids_NxK.shape or tail_N.shape != ids_NxK.shape[:1]:
    raise ValueError(
        f"expected ids [N, k], logprobs [N, k] and tail [N]; got {ids_NxK.shape}, {logprobs_NxK.shape}, {tail_N.shape}"
    )
  if not 0 < ids_NxK.shape[1] <= min(vocab_size, 65535):
    raise ValueError(f"k={ids_NxK.shape[1]} must be in [1, min(vocab_size={vocab_size}, 65535)]")
  if ids_NxK.size and (ids_NxK.min() < 0 or ids_NxK.max() >= vocab_size):
    raise ValueError(f"ids must lie in [0, {vocab_size}); got [{ids_NxK.min()}, {ids_NxK.max()}]")
  if np.isnan(tail_N).any() or not (logprobs_NxK < np.inf).all():
    raise ValueError("teacher log-probabilities contain NaN or +inf")


def _renyi_scale(vocab_size: int, k: int) -> float:
  return float(np.log(vocab_size - k)) if vocab_size - k > 1 else 0.0


def _code_renyi(renyi_NxR: np.ndarray, scale: float) -> bytes:
  """Levels of ``H / scale``: the first order's, then each order's decrease (order-major byte planes)."""
  if renyi_NxR.shape[1] == 0:
    return b""
  fraction = np.clip(renyi_NxR.astype(np.float64) / scale, 0.0, 1.0) if scale > 0 else np.zeros(renyi_NxR.shape)
  levels = np.minimum.accumulate(np.rint(fraction * _RENYI_LEVELS).astype(np.int64), axis=1)  # H is non-increasing
  steps = np.concatenate([levels[:, :1], levels[:, :-1] - levels[:, 1:]], axis=1)
  return _pack_uint_planes(np.ascontiguousarray(steps.T).ravel())


def _decode_renyi(blob: bytes, rows: int, orders: int, scale: float) -> np.ndarray:
  steps = _unpack_uint_planes(blob, rows * orders).reshape(orders, rows).T.astype(np.int64)
  levels = steps[:, :1] - np.concatenate([np.zeros((rows, 1), np.int64), np.cumsum(steps[:, 1:], axis=1)], axis=1)
  return (levels * (scale / _RENYI_LEVELS)).astype(np.float32)


def encode_topk(
    ids_NxK,
    logprobs_NxK,
    tail_logmass_N,
    *,
    vocab_size: int,
    logprob_step=DEFAULT_LOGPROB_STEP,
    tail_renyi_NxR=None,
) -> bytes:
  """Codes ``N`` rows of top-k ids and log-probs plus their tail log-mass (and Renyi entropies).

  Args:
    ids_NxK: ``[N, k]`` ids of distinct tokens, any order within a row.
    logprobs_NxK: ``[N, k]`` their log-probabilities at T=1 (``-inf`` allowed).
    tail_logmass_N: ``[N]`` log of the probability outside the k ids.
    vocab_size: V; ids must be below it.
    logprob_step: quantisation step in nats; KL@T=1 <= ``step^2 / 8`` (4.9e-4 at 1/16).
    tail_renyi_NxR: ``[N, R]`` Renyi entropies of each row's tail at increasing orders, or None (R = 0).

  Returns:
    The coded block (deterministic).
  """
  ids_NxK = np.asarray(ids_NxK)
  logprobs_NxK = np.asarray(logprobs_NxK, np.float32)
  tail_N = np.asarray(tail_logmass_N, np.float32)
  _check_inputs(ids_NxK, logprobs_NxK, tail_N, vocab_size)
  rows, k = ids_NxK.shape
  renyi = np.zeros((rows, 0)) if tail_renyi_NxR is None else np.asarray(tail_renyi_NxR, np.float64)
  if renyi.shape[0] != rows or renyi.ndim != 2 or renyi.shape[1] > 255 or np.isnan(renyi).any():
    raise ValueError(f"tail Renyi entropies must be [N={rows}, R <= 255] without NaN; got {renyi.shape}")
  ids = ids_NxK.astype(np.int32)
  logprobs = logprobs_NxK
  gaps = np.diff(ids, axis=1, prepend=np.int32(-1)) - 1
  if (gaps < 0).any():  # Not sorted by id yet (a sorted input skips the sort).
    order = np.argsort(ids, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    logprobs = np.take_along_axis(logprobs, order, axis=1)
    gaps = np.diff(ids, axis=1, prepend=np.int32(-1)) - 1
    if (gaps < 0).any():
      raise ValueError("each row's top-k ids must be distinct")
  row_max = logprobs.max(axis=1, keepdims=True) if rows else np.zeros((0, 1), np.float32)
  with np.errstate(invalid="ignore"):
    scaled = (row_max - logprobs) * np.float32(1.0 / logprob_step)
  # -inf entries (and rows that are all -inf) get the largest level: probability ~0 once decoded.
  levels = np.where(np.isnan(scaled), _MAX_LEVEL, np.minimum(np.rint(scaled), _MAX_LEVEL)).astype(np.int32)
  row_max_level = levels.max(axis=1) if rows else np.zeros(0, np.int32)
  low_bits, gap_high, gap_low = _code_gaps(gaps.ravel())
  sections = (
      _compress(tail_N.astype("<f4").view(np.uint8).reshape(rows, 4).T.tobytes()),
      gap_high,
      gap_low,
      _pack_uint_planes(row_max_level),
      _pack_uint_planes((row_max_level[:, None] - levels).ravel()),
      _code_renyi(renyi, _renyi_scale(vocab_size, k)),
  )
  header = _HEADER.pack(_MAGIC, low_bits, k, rows, vocab_size, logprob_step, renyi.shape[1])
  return header + _SECTION_LENGTHS.pack(*map(len, sections)) + b"".join(sections)


def log1mexp(x: np.ndarray) -> np.ndarray:
  """``log(1 - exp(x))`` for ``x <= 0``, accurate near 0 and for very negative ``x``."""
  x = np.minimum(np.asarray(x, np.float64), 0.0)
  with np.errstate(divide="ignore"):
    return np.where(x > -np.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def decode_topk(blob: bytes) -> TopK:
  """Inverse of :func:`encode_topk` (ids exact, logprobs within the quantisation step)."""
  version_1 = blob[:4] == _MAGIC_V1
  header, section_lengths = (_HEADER_V1, _SECTION_LENGTHS_V1) if version_1 else (_HEADER, _SECTION_LENGTHS)
  if len(blob) < header.size + section_lengths.size or blob[:4] not in (_MAGIC, _MAGIC_V1):
    raise ValueError(f"not a top-k block (magic {blob[:4]!r}, expected {_MAGIC!r} or {_MAGIC_V1!r})")
  _, low_bits, k, rows, vocab_size, step, *orders = header.unpack_from(blob)
  orders = orders[0] if orders else 0
  lengths = section_lengths.unpack_from(blob, header.size)
  offset = header.size + section_lengths.size
  parts = {}
  for name, length in zip(_SECTIONS, lengths):
    parts[name] = blob[offset : offset + length]
    offset += length
  if offset != len(blob):
    raise ValueError(f"top-k block holds {len(blob)} bytes, its header describes {offset}")
  count = rows * k
  tail = np.frombuffer(_decompress(parts["tail"]), np.uint8).reshape(4, rows).T.copy().view("<f4").reshape(rows)
  gaps = (_unpack_uint_planes(parts["gap_high"], count) << low_bits) | _unpack_low_bits(parts["gap_low"], low_bits, count)
  gaps += 1
  ids = np.cumsum(gaps.reshape(rows, k), axis=1, dtype=np.int32) - 1
  row_max_level = _unpack_uint_planes(parts["row_max_level"], rows)
  offsets = _unpack_uint_planes(parts["level_offsets"], count).reshape(rows, k)
  # logprob = -level * step + shift, level = row_max_level - offset; the top-1 has level 0.
  relative = (offsets - row_max_level[:, None]).astype(np.float32) * np.float32(step)
  peak = relative.max(axis=1, keepdims=True) if rows else np.zeros((0, 1), np.float32)
  log_sum = np.log(np.exp(relative - peak).sum(axis=1, keepdims=True, dtype=np.float64))
  shift = (log1mexp(tail)[:, None] - log_sum).astype(np.float32) - peak
  renyi = _decode_renyi(parts["tail_renyi"], rows, orders, _renyi_scale(vocab_size, k)) if orders else None
  return TopK(ids, relative + shift, tail, renyi)
