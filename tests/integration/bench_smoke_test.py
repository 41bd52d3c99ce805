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

"""``tools/bench_distill.py --quick`` runs all four variants and writes its tables (no timing assertions)."""

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO, subprocess_env

VARIANTS = ("ours_dense", "ours_chunked", "upstream", "floor")


def _table(markdown: str, first_header: str) -> tuple[list[str], list[list[str]]]:
  """Header cells and body rows of the Markdown table whose header starts with ``first_header``."""
  lines = markdown.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} "))
  header = [c.strip() for c in lines[start].strip("|").split("|")]
  rows = []
  for line in lines[start + 2 :]:
    if not line.startswith("|"):
      break
    rows.append([c.strip() for c in line.strip("|").split("|")])
  return header, rows


def _positive_finite(text: str) -> bool:
  try:
    value = float(text)
  except ValueError:
    return False
  return math.isfinite(value) and value > 0


@pytest.mark.slow  # make test-slow
def test_quick_benchmark_writes_report(tmp_path, teacher_checkpoint):
  out, plot, raw = tmp_path / "bench.md", tmp_path / "bench.png", tmp_path / "bench.json"
  cmd = [sys.executable, str(REPO / "tools" / "bench_distill.py"), "--quick", "--out", str(out), "--plot", str(plot)]
  cmd += ["--json", str(raw), "--work-dir", str(tmp_path / "work"), "--teacher-checkpoint", teacher_checkpoint]
  proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]

  markdown = out.read_text(encoding="utf-8")
  assert markdown.splitlines()[0].startswith("# Benchmarks")
  assert "python tools/bench_distill.py --out" in markdown and "--quick" in markdown

  header, rows = _table(markdown, "vocab | seq | ours_dense (s)")
  assert len(rows) == 1
  ratio_columns = [i for i, name in enumerate(header) if "/" in name]
  assert len(ratio_columns) >= 4, header
  for i in range(2, len(header)):  # four step times, then ratios written "median (low-high)"
    assert _positive_finite(rows[0][i].split()[0]), (header[i], rows[0][i])

  _, memory_rows = _table(markdown, "vocab | seq | temp MiB")
  assert all(_positive_finite(cell) for cell in memory_rows[0][2:]), memory_rows
  assert "## Targets" in markdown and "## Why" in markdown

  result = json.loads(raw.read_text(encoding="utf-8"))["rows"][0]
  for variant in VARIANTS:
    assert result[variant]["error"] is None, result[variant]
    assert result[variant]["temp_bytes"] > 0 and result[variant]["maxrss_kib"] > 0
    assert len(result[variant]["round_times_s"]) == 2  # --quick runs two interleaved rounds
