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

"""The report's numbers: paired time ratios, the three tables, the failures and a verdict per target."""

import math
import statistics
import types

from maxtext_distill_plugin.training import step as step_lib
from tools.bench import shapes

TIME_VS_UPSTREAM = 0.8
TIME_VS_FLOOR = 1.10
TEMP_VS_UPSTREAM = 0.25


def auto_picks_chunked(shape: dict) -> bool:
  """Whether the plugin's ``distill_loss_impl=auto`` picks the chunked loss at a row's shape on an accelerator.

  Asks the plugin's own policy (:func:`step_lib.use_chunked_loss`) about a plain model of that per-device batch,
  sequence and vocabulary; on the CPU the policy always picks chunked.
  """
  student = types.SimpleNamespace(
      hardware="tpu",
      num_vocab_tiling=1,
      attention="dot_product",
      parameter_memory_host_offload=False,
      quantization="",
      logits_via_embedding=False,
      per_device_batch_size=shape["batch"],
      max_target_length=shape["seq"],
      vocab_size=shape["vocab"],
  )
  return step_lib.use_chunked_loss(types.SimpleNamespace(distill_loss_impl="auto"), student)


def ratio(numerator, denominator):
  return None if numerator is None or not denominator else numerator / denominator


def fmt(value, spec: str) -> str:
  return "n/a" if value is None or not math.isfinite(value) else f"{value:{spec}}"


def _get(row: dict, variant: str, key: str):
  r = row.get(variant) or {}
  return None if r.get("error") else r.get(key)


def mib(row: dict, variant: str, key: str = "temp_bytes"):
  value = _get(row, variant, key)
  return None if value is None else value / (shapes.MIB if key.endswith("bytes") else 1024)


def paired_ratio(row: dict, numerator: str, denominator: str):
  """``(median, low, high)`` over rounds of (round median of one variant) / (round median of the other).

  Both ran back to back within each round, so a drift in machine load cancels in the ratio.
  """
  rounds_a, rounds_b = _get(row, numerator, "round_times_s"), _get(row, denominator, "round_times_s")
  if not rounds_a or not rounds_b:
    return None
  ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(rounds_a, rounds_b) if a and b]
  return (statistics.median(ratios), min(ratios), max(ratios)) if ratios else None


def _ratio_cell(value) -> str:
  return "n/a" if value is None else f"{value[0]:.2f} ({value[1]:.2f}-{value[2]:.2f})"


_TIME_RATIOS = (("ours_dense", "upstream"), ("ours_chunked", "upstream"), ("ours_dense", "floor"))
_TIME_RATIOS += (("ours_chunked", "floor"), ("floor", "upstream"))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
  return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _shape_cells(row: dict) -> list[str]:
  return [str(row["shape"]["vocab"]), str(row["shape"]["seq"])]


def time_table(rows: list[dict]) -> list[str]:
  header = ["vocab", "seq"] + [f"{v} (s)" for v in shapes.VARIANTS] + [f"{a}/{b}" for a, b in _TIME_RATIOS]
  body = [
      _shape_cells(row)
      + [fmt(_get(row, v, "median_step_s"), ".3f") for v in shapes.VARIANTS]
      + [_ratio_cell(paired_ratio(row, a, b)) for a, b in _TIME_RATIOS]
      for row in rows
  ]
  return _table(header, body)


def memory_table(rows: list[dict]) -> list[str]:
  header = ["vocab", "seq"] + [f"temp MiB {v}" for v in shapes.VARIANTS] + ["chunked/upstream", "dense/upstream"]
  header += [f"peak RSS MiB {v}" for v in shapes.VARIANTS]
  body = []
  for row in rows:
    temp = {v: mib(row, v) for v in shapes.VARIANTS}
    cells = _shape_cells(row) + [fmt(temp[v], ".1f") for v in shapes.VARIANTS]
    cells += [fmt(ratio(temp[v], temp["upstream"]), ".3f") for v in ("ours_chunked", "ours_dense")]
    body.append(cells + [fmt(mib(row, v, "maxrss_kib"), ".0f") for v in shapes.VARIANTS])
  return _table(header, body)


def setup_table(rows: list[dict]) -> list[str]:
  header = (
      ["vocab", "seq"] + [f"compile s {v}" for v in shapes.VARIANTS] + [f"fastest step s {v}" for v in shapes.VARIANTS]
  )
  body = [
      _shape_cells(row)
      + [fmt(_get(row, v, "compile_s"), ".1f") for v in shapes.VARIANTS]
      + [fmt(_get(row, v, "min_step_s"), ".3f") for v in shapes.VARIANTS]
      for row in rows
  ]
  return _table(header, body)


def failures(rows: list[dict]) -> list[str]:
  return [f"- {row['name']} / {v}: {row[v]['error']}" for row in rows for v in shapes.VARIANTS if row[v].get("error")]


def _verdict(value, limit: float) -> str:
  if value is None:
    return "not measured"
  met = value <= limit
  return f"**{'met' if met else 'missed'}** {value:.3f} ({'margin' if met else 'over by'} {abs(value / limit - 1):.1%})"


def is_anchor(row: dict) -> bool:
  return row["shape"]["vocab"] == 32768 and row["shape"]["seq"] == 1024


def target_lines(rows: list[dict]) -> list[str]:
  """A verdict per target and shape (the memory target is stated at vocab 32k, seq 1024)."""
  anchor = [r for r in rows if is_anchor(r)]
  if anchor:
    value = ratio(mib(anchor[0], "ours_chunked"), mib(anchor[0], "upstream"))
    lines = [f"- Compiled temp memory, ours / upstream ≤ {TEMP_VS_UPSTREAM} at vocab 32k, seq 1024: chunked"]
    lines[0] += f" {_verdict(value, TEMP_VS_UPSTREAM)}; dense"
    lines[0] += f" {_verdict(ratio(mib(anchor[0], 'ours_dense'), mib(anchor[0], 'upstream')), TEMP_VS_UPSTREAM)}."
  else:
    lines = ["- Compiled temp memory at vocab 32k, seq 1024: that shape was not run."]
  trend = ", ".join(
      f"{r['shape']['vocab']}/{r['shape']['seq']} {fmt(ratio(mib(r, 'ours_chunked'), mib(r, 'upstream')), '.2f')}"
      for r in rows
  )
  lines.append(f"  Chunked / upstream temp memory at every vocab/seq: {trend}.")
  for label, other, limit in (("upstream", "upstream", TIME_VS_UPSTREAM), ("the floor", "floor", TIME_VS_FLOOR)):
    lines.append(f"- Step time, ours / {label} ≤ {limit} (median of per-round ratios):")
    for row in rows:
      parts = [
          f"{impl.removeprefix('ours_')} {_verdict((paired_ratio(row, impl, other) or [None])[0], limit)}"
          for impl in ("ours_dense", "ours_chunked")
      ]
      best = (paired_ratio(row, "floor", "upstream") or [None])[0]
      if other == "upstream" and best is not None and best > limit:
        parts.append(f"unreachable here: even the floor takes {best:.2f}x upstream's time")
      lines.append(f"  - vocab {row['shape']['vocab']}, seq {row['shape']['seq']}: " + "; ".join(parts))
  return lines
