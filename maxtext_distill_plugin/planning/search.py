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

"""Which ``per_device_batch_size`` the largest-batch search compiles next.

A TPU compile of a real pair takes minutes, so the search predicts instead of doubling: a step's memory per device
grows about linearly with the batch (the weights and optimizer state are fixed, activations and temporaries scale),
so each compile's total (or the "Used X of Y hbm" figure of a refusal) is a point on that line. The next size is
the largest batch the line predicts to fit, kept strictly inside the bracket of the largest size known to fit and
the smallest known not to; when the line says the largest known fitting size is already the answer, its successor
is tried to close the bracket. The bracket makes the answer exact whatever the line's error; the line makes it
take about three compiles instead of the six to eight of doubling and bisection.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Point:
  """One compile: the batch, whether it fit, its total bytes per device (0: unknown) and the part that does not
  scale with the batch (the state's parameters and optimizer moments; 0: unknown)."""

  batch: int
  fits: bool
  total: int
  fixed: int = 0


def bracket(points: list[Point]) -> tuple[int, int | None]:
  """``(largest batch known to fit or 0, smallest known not to fit or None)``."""
  low = max((p.batch for p in points if p.fits), default=0)
  high = min((p.batch for p in points if not p.fits), default=None)
  return low, high


def _predicted(points: list[Point], budget: int) -> int | None:
  """The largest batch whose total the line through the known totals keeps within ``budget``."""
  known = sorted({p.batch: p for p in points if p.total > 0}.values(), key=lambda p: p.batch)
  if not known:
    return None
  if len(known) == 1:
    # One point: the fixed part is the state; everything else is taken as proportional to the batch.
    p = known[0]
    per_row = (p.total - p.fixed) / p.batch
    return int((budget - p.fixed) // per_row) if per_row > 0 else None
  # The two points nearest the budget from either side (or the two largest) fix the line.
  below = [p for p in known if p.total <= budget] or known[:1]
  above = [p for p in known if p.total > budget] or known[-1:]
  a, b = below[-1], above[0]
  if a.batch == b.batch:
    a, b = known[-2], known[-1]
  slope = (b.total - a.total) / (b.batch - a.batch)
  if slope <= 0:
    return None
  return a.batch + int((budget - a.total) // slope)


def next_batch(points: list[Point], budget: int) -> int | None:
  """The next batch to compile, or None when the bracket is closed (the largest fitting size is exact)."""
  low, high = bracket(points)
  if high is not None and high - low <= 1:
    return None
  guess = _predicted(points, budget)
  if guess is None:  # no usable totals: doubling, then bisection
    guess = low * 2 if high is None else (low + high) // 2
  guess = max(guess, low + 1)
  if high is not None:
    guess = min(guess, high - 1)
  return max(guess, 1)
