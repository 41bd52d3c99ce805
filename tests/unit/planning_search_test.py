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

"""The largest-batch search against simulated compilers whose memory per batch is known: the answer is exact
whatever the memory curve, and on a near-linear one it takes far fewer compiles than doubling and bisection."""

import pytest

from maxtext_distill_plugin.planning import search

GIB = 1024**3


def _search(total_of, start: int, budget: int, fixed: int, limit: int = 12) -> tuple[int, int | None, int]:
  """Runs the search as the runner does; returns (largest fitting, first not fitting, compiles after the first)."""
  points = [search.Point(start, total_of(start) <= budget, total_of(start), fixed)]
  while len(points) - 1 < limit:
    size = search.next_batch(points, budget)
    if size is None:
      break
    assert size not in {p.batch for p in points}, "a size is never compiled twice"
    points.append(search.Point(size, total_of(size) <= budget, total_of(size), fixed))
  low, high = search.bracket(points)
  return low, high, len(points) - 1


def _truth(total_of, budget: int) -> int:
  return max(b for b in range(1, 10_000) if total_of(b) <= budget)


@pytest.mark.parametrize(
    "fixed, per_row, fixed_temp, start",
    [(8 * GIB, 2.3 * GIB, 0.4 * GIB, 2), (30 * GIB, 5.1 * GIB, 3 * GIB, 2), (19 * GIB, 11 * GIB, 0.0, 1)],
)
def test_linear_memory_is_found_exactly_in_a_few_compiles(fixed, per_row, fixed_temp, start):
  budget = 95 * GIB

  def total_of(b):
    return int(fixed + fixed_temp + per_row * b)

  low, high, compiles = _search(total_of, start, budget, int(fixed))
  assert (low, high) == (_truth(total_of, budget), _truth(total_of, budget) + 1)
  # Doubling from the start and bisecting needs 6 to 8 compiles for these (answers 9 to 36).
  assert compiles <= 3


@pytest.mark.parametrize("start", [1, 2, 5, 40])
def test_a_curved_or_stepped_memory_curve_still_gets_the_exact_answer(start):
  budget = 95 * GIB

  def total_of(b):  # superlinear, with a jump where the compiler would change its plan
    return int(10 * GIB + 0.9 * GIB * b + 0.02 * GIB * b * b + (6 * GIB if b >= 17 else 0))

  low, high, _ = _search(total_of, start, budget, 10 * GIB)
  truth = _truth(total_of, budget)
  assert (low, high) == (truth, truth + 1)


def test_start_that_does_not_fit_and_unknown_totals_fall_back_to_bisection():
  budget = 100
  points = [search.Point(8, False, 0)]  # a refusal that named no figures
  assert search.next_batch(points, budget) == 4
  points.append(search.Point(4, True, 0))
  assert search.next_batch(points, budget) == 6
  points += [search.Point(6, False, 0), search.Point(5, True, 0)]
  assert search.next_batch(points, budget) is None
  assert search.bracket(points) == (5, 6)


def test_nothing_fits_closes_at_zero():
  points = [search.Point(2, False, 50, 40), search.Point(1, False, 45, 40)]
  assert search.next_batch(points, 30) is None
  assert search.bracket(points) == (0, 1)


def test_libtpu_early_refusal_gives_the_temporaries_and_a_point_for_the_search():
  from maxtext_distill_plugin.planning import compiler  # pylint: disable=import-outside-toplevel

  # libtpu 0.0.50.1's words for row 01's dense step at per_device_batch_size=64 on a v5p-8 (docs/scale).
  message = (
      "RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: Ran out of memory on HBM, the total memory required for HLO"
      " temporaries (197.77G) exceeds available HBM (95.73G). HLO module: jit_train_step."
  )
  assert compiler.is_out_of_memory(RuntimeError(message))
  assert compiler.temporaries_over_hbm(message) == int(197.77 * GIB)
  assert compiler.used_of_hbm(message) is None and compiler.temporaries_over_hbm("Used 1G of 2G hbm") is None
  # With the state (8 GiB) on top of those temporaries, the line from that refusal alone lands inside (0, 64).
  fixed = 8 * GIB
  guess = search.next_batch([search.Point(64, False, int(197.77 * GIB) + fixed, fixed)], 95 * GIB)
  assert guess == int(87 * GIB // ((197.77 * GIB) / 64))
