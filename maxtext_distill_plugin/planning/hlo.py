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

"""Reads a compiled module's HLO text: its collectives per step and the shapes of its buffers.

Each computation gets a multiplier: how many times one call of the entry computation runs it. A ``while`` body
runs its loop's trip count times (XLA's ``known_trip_count``, else the single integer constant its condition
compares against; unknown loops count once and are flagged); fusions, calls and branches run as often as their
caller. A collective's bytes are the bytes of the array it produces on one device.
"""

import collections
import dataclasses
import math
import re

COLLECTIVE_KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute", "ragged-all-to-all")
_DTYPE_BYTES = {
    "pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_SHAPE = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*(\(.*\))?\s*->.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*)$")
_CALLEE = re.compile(r"\b(calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_CONSTANT = re.compile(r"\bs(?:32|64)\[\](?:\{[^}]*\})?\s+constant\((\d+)\)")


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective instruction: its kind, result shapes, how often a step runs it, and whether inside a loop."""

  kind: str
  shapes: tuple[tuple[str, tuple[int, ...]], ...]
  bytes: int
  count: int
  in_loop: bool
  computation: str


@dataclasses.dataclass
class _Computation:
  name: str
  lines: list
  is_entry: bool = False


def shapes_in(text: str) -> list[tuple[str, tuple[int, ...]]]:
  """``(dtype, dims)`` of every array type written in ``text`` (tuple types give several)."""
  found = []
  for dtype, dims in _SHAPE.findall(text):
    if dtype in _DTYPE_BYTES:
      found.append((dtype, tuple(int(d) for d in dims.split(",") if d)))
  return found


def nbytes(shape: tuple[str, tuple[int, ...]]) -> int:
  return math.prod(shape[1]) * _DTYPE_BYTES[shape[0]]


def _computations(text: str) -> list[_Computation]:
  computations, current = [], None
  for line in text.splitlines():
    if current is None:
      header = _HEADER.match(line)
      if header:
        current = _Computation(header.group(2), [], bool(header.group(1)))
    elif line.strip() == "}":
      computations.append(current)
      current = None
    else:
      current.lines.append(line)
  return computations


def _trip_count(line: str, condition: _Computation | None) -> int | None:
  known = _TRIP.search(line)
  if known:
    return int(known.group(1))
  if condition is not None:
    constants = {int(c) for l in condition.lines for c in _CONSTANT.findall(l)}
    if len(constants) == 1:
      return constants.pop()
  return None


def multipliers(text: str) -> tuple[list[_Computation], dict[str, int], dict[str, bool], int]:
  """The computations, each one's runs per step, whether it is inside a loop, and the number of unknown loops."""
  computations = _computations(text)
  by_name = {c.name: c for c in computations}
  runs: dict[str, int] = collections.defaultdict(int)
  in_loop: dict[str, bool] = collections.defaultdict(bool)
  unknown = 0
  for c in computations:
    if c.is_entry:
      runs[c.name] = 1
  # HLO text defines callees before their callers, so walking backwards visits every caller first.
  for c in reversed(computations):
    if not runs[c.name]:
      continue
    for line in c.lines:
      callees = list(_CALLEE.findall(line))
      for group in _BRANCHES.findall(line):
        callees += [("branch", n.strip().lstrip("%")) for n in group.split(",") if n.strip()]
      if not callees:
        continue
      trips = 1
      if " while(" in line:
        condition = next((by_name.get(n) for k, n in callees if k == "condition"), None)
        trips = _trip_count(line, condition)
        if trips is None:
          unknown, trips = unknown + 1, 1
      for kind, name in callees:
        looped = kind == "body"
        runs[name] += runs[c.name] * (trips if looped else 1)
        in_loop[name] = in_loop[name] or in_loop[c.name] or looped
  return computations, dict(runs), dict(in_loop), unknown


def _kind(op: str) -> str | None:
  base = op.removesuffix("-start")
  return base if base in COLLECTIVE_KINDS else None


def collectives(text: str) -> tuple[list[Collective], int]:
  """Every collective of the module with its runs per step, and the number of loops whose trip count is unknown."""
  computations, runs, in_loop, unknown = multipliers(text)
  found = []
  for c in computations:
    for line in c.lines:
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      kind = _kind(match.group(3))
      if kind is None or not runs.get(c.name):
        continue
      shapes = shapes_in(match.group(2))
      if match.group(3).endswith("-start") and kind != "all-reduce" and len(shapes) > 1:
        shapes = [max(shapes, key=nbytes)]  # an async start's tuple also holds its operand (and sync flags)
      found.append(
          Collective(
              kind,
              tuple(shapes),
              sum(map(nbytes, shapes)),
              runs[c.name],
              in_loop.get(c.name, False),
              c.name,
          )
      )
  return found, unknown


def summarize(found: list[Collective], vocab_sizes: set[int]) -> dict:
  """Per kind: instructions, runs and bytes per step (and how much of it runs inside a loop); and the
  vocabulary-sized ones (any dimension in ``vocab_sizes``), split the same way, with the shapes inside loops."""
  by_kind: dict[str, dict] = {}
  vocab = {"count": 0, "bytes": 0, "in_loop_count": 0, "in_loop_bytes": 0, "in_loop_shapes": []}
  for c in found:
    entry = by_kind.setdefault(
        c.kind, {"instructions": 0, "count": 0, "bytes": 0, "in_loop_count": 0, "in_loop_bytes": 0}
    )
    entry["instructions"] += 1
    entry["count"] += c.count
    entry["bytes"] += c.bytes * c.count
    if c.in_loop:
      entry["in_loop_count"] += c.count
      entry["in_loop_bytes"] += c.bytes * c.count
    if any(d in vocab_sizes for _, dims in c.shapes for d in dims):
      vocab["count"] += c.count
      vocab["bytes"] += c.bytes * c.count
      if c.in_loop:
        vocab["in_loop_count"] += c.count
        vocab["in_loop_bytes"] += c.bytes * c.count
        vocab["in_loop_shapes"].append(f"{c.kind} {_format(c.shapes)} x{c.count}")
  return {"by_kind": by_kind, "vocabulary_sized": vocab}


def _format(shapes) -> str:
  return ",".join(f"{dtype}[{','.join(map(str, dims))}]" for dtype, dims in shapes)


def sequence_vocab_buffers(text: str, seq_rows: set[int], vocab_sizes: set[int], widths: set[int]) -> list[str]:
  """Distinct array types holding a whole sequence of vocabulary rows, ``[B, S, V]`` or flattened ``[B*S, V]``.

  ``seq_rows`` holds S and the flattened row counts B*S; ``vocab_sizes`` V and its sharded widths. Size-1
  dimensions are ignored, and a float shape left with one other dimension equal to a model width (``widths``) is
  an unembedding or its gradient, not logits: so a single row's float ``[1, S, V]`` is missed when S equals a
  model width (its integer or boolean companions, e.g. a one-hot's ``pred[1, S, V]``, are still found).
  Tile loops hold ``[B, tile, V]`` and are not matched.
  """
  found = set()
  for dtype, dims in shapes_in(text):
    squeezed = tuple(d for d in dims if d != 1)
    if len(squeezed) < 2 or not any(d in vocab_sizes for d in squeezed):
      continue
    axis = next(i for i, d in enumerate(squeezed) if d in vocab_sizes)
    others = squeezed[:axis] + squeezed[axis + 1 :]
    if len(squeezed) == 2 and others[0] in widths and dtype[0] in "fb":  # weights are float; masks and ids are not
      continue
    if any(d in seq_rows for d in others):
      found.add(_format([(dtype, dims)]))
  return sorted(found)
