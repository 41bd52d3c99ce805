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

"""The regression guard: step-time ratios just measured against those docs/benchmarks.md records.

Only ratios measured back to back (ours / the floor, median of per-round ratios) are compared: absolute step times
move with the machine and its load, the ratio much less. A ratio fails when it exceeds the documented one by more
than the margin.
"""

import dataclasses
import re

from tools.bench import tables

DEFAULT_MARGIN = 0.15  # 15 % above the documented ratio fails
CHECKED = (("ours_chunked", "floor"), ("ours_dense", "floor"))
_CELL = re.compile(r"^\s*([0-9.]+)")


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One ratio at one shape: measured now, documented, and whether it stays within the margin."""

  shape: tuple[int, int]  # (vocab, seq)
  ratio: str  # e.g. "ours_chunked/floor"
  measured: float | None
  documented: float | None
  margin: float

  @property
  def ok(self) -> bool:
    if self.measured is None or self.documented is None:
      return False
    return self.measured <= self.documented * (1.0 + self.margin)

  def line(self) -> str:
    vocab, seq = self.shape
    limit = "n/a" if self.documented is None else f"{self.documented * (1.0 + self.margin):.3f}"
    return (
        f"{'ok  ' if self.ok else 'FAIL'} vocab {vocab} seq {seq} {self.ratio}: measured"
        f" {tables.fmt(self.measured, '.3f')}, documented {tables.fmt(self.documented, '.3f')}, limit {limit}"
        f" (+{self.margin:.0%})"
    )


def documented_ratios(markdown: str) -> dict[tuple[int, int], dict[str, float]]:
  """``{(vocab, seq): {"ours_chunked/floor": 0.74, ...}}`` from the step-time table of docs/benchmarks.md."""
  found: dict[tuple[int, int], dict[str, float]] = {}
  header = None
  for line in markdown.splitlines():
    if not line.startswith("|"):
      header = None
      continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if header is None:
      header = cells if "ours_chunked/floor" in cells and cells[:2] == ["vocab", "seq"] else []
      continue
    if not header or set(cells[0]) <= set("-:"):
      continue
    shape = (int(cells[0]), int(cells[1]))
    for name, cell in zip(header, cells):
      match = _CELL.match(cell)
      if "/" in name and match:
        found.setdefault(shape, {})[name] = float(match.group(1))
  return found


def compare(rows: list[dict], documented: dict, margin: float = DEFAULT_MARGIN) -> list[Verdict]:
  """A :class:`Verdict` for every checked ratio of every measured shape (``rows`` as the benchmark's JSON holds)."""
  verdicts = []
  for row in rows:
    shape = (int(row["shape"]["vocab"]), int(row["shape"]["seq"]))
    for numerator, denominator in CHECKED:
      name = f"{numerator}/{denominator}"
      measured = tables.paired_ratio(row, numerator, denominator)
      verdicts.append(
          Verdict(shape, name, None if measured is None else measured[0], documented.get(shape, {}).get(name), margin)
      )
  return verdicts
