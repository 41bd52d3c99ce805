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

"""The regression guard's arithmetic: documented ratios read from docs/benchmarks.md, paired ratios compared."""

import pathlib

from tools.bench import check

REPO = pathlib.Path(__file__).resolve().parents[2]


def _row(vocab, seq, **round_times):
  return {"shape": {"vocab": vocab, "seq": seq}, **{v: {"round_times_s": t} for v, t in round_times.items()}}


def test_the_shipped_doc_documents_the_checked_ratios_of_the_default_shape():
  documented = check.documented_ratios((REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8"))
  for name in ("ours_chunked/floor", "ours_dense/floor"):
    assert 0.1 < documented[(32768, 256)][name] < 10.0, name


def test_a_ratio_fails_past_the_margin_and_passes_within_it():
  documented = check.documented_ratios(
      "| vocab | seq | ours_dense/floor | ours_chunked/floor |\n|---:|---:|---:|---:|\n| 8 | 4 | 2.00 (1.9-2.1) | 1.00"
      " (0.9-1.1) |\n"
  )
  assert documented == {(8, 4): {"ours_dense/floor": 2.0, "ours_chunked/floor": 1.0}}
  # Per-round medians: chunked/floor = 1.2, 1.1, 1.1 (median 1.1); dense/floor = 2.4, 2.4, 2.2 (median 2.4).
  row = _row(8, 4, floor=[[1.0], [2.0], [1.0]], ours_chunked=[[1.2], [2.2], [1.1]], ours_dense=[[2.4], [4.8], [2.2]])
  verdicts = {v.ratio: v for v in check.compare([row], documented, margin=0.15)}
  assert abs(verdicts["ours_chunked/floor"].measured - 1.1) < 1e-9 and verdicts["ours_chunked/floor"].ok
  assert abs(verdicts["ours_dense/floor"].measured - 2.4) < 1e-9 and not verdicts["ours_dense/floor"].ok
  assert "FAIL" in verdicts["ours_dense/floor"].line()
  # A shape the doc does not hold cannot pass.
  assert not any(v.ok for v in check.compare([_row(16, 4, floor=[[1.0]], ours_chunked=[[0.5]])], documented))


def test_the_report_asks_the_plugins_auto_policy(monkeypatch):
  """The report's "auto picks dense here" rows come from the plugin's policy itself, not a copy of its threshold."""
  from maxtext_distill_plugin.training import step as step_lib  # pylint: disable=import-outside-toplevel
  from tools.bench import tables  # pylint: disable=import-outside-toplevel

  at_threshold, below = {"batch": 1, "seq": 2048, "vocab": 32768}, {"batch": 1, "seq": 1024, "vocab": 32768}
  assert tables.auto_picks_chunked(at_threshold) and not tables.auto_picks_chunked(below)
  monkeypatch.setattr(step_lib, "AUTO_CHUNKED_MIN_LOGITS", 1 << 20)
  assert tables.auto_picks_chunked(below)
