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

"""The plan as a table for people and as JSON for tools (``tools/scale_table.py`` reads a directory of them)."""

import json

GIB = 1024**3
MIB = 1024**2


def _unit(plan: dict) -> tuple[str, int]:
  """GiB, or MiB when every program is under 1 GiB (tiny configs)."""
  largest = max((r["memory"]["total"] for r in plan["paths"].values()), default=0)
  return ("GiB", GIB) if largest >= GIB else ("MiB", MIB)


def _size(value: int | None, unit: int) -> str:
  return "-" if value is None else f"{value / unit:.2f}"


def _kind_line(kind: str, totals: dict) -> str:
  inside = totals["in_loop_count"]
  loops = f" ({inside}x {_bytes(totals['in_loop_bytes'])} inside loops)" if inside else ""
  return f"{kind} {totals['count']}x {_bytes(totals['bytes'])}{loops}"


def _bytes(value: float) -> str:
  for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if value >= size:
      return f"{value / size:.2f} {unit}"
  return f"{int(value)} B"


def table(plan: dict) -> str:
  """A plain-text report: memory per device, fit, largest batch, FLOPs, collectives and [B, S, V] buffers."""
  target = plan["target"]
  hbm = target["hbm_bytes"]
  name, unit = _unit(plan)
  lines = [
      (
          f"target {target['name']}: {target['num_devices']} devices,"
          f" {_size(hbm, unit) + ' ' + name if hbm < 2**60 else 'no HBM limit'}"
          f" per device; per_device_batch_size={plan['per_device_batch_size']:g} seq={plan['max_target_length']};"
          f" the run compiles the {plan['run_path']} step"
      ),
      "",
      f"{'per device (' + name + ')':<18}" + "".join(f"{p:>12}" for p in plan["paths"]),
  ]
  rows = (
      ("student params", "student_params"),
      ("optimizer state", "optimizer_state"),
      ("teacher params", "teacher_params"),
      ("temp", "temp"),
      ("total", "total"),
  )
  programs = list(plan["paths"].values())

  def line(label: str, cell) -> str:
    return f"{label:<18}" + "".join(f"{cell(r):>12}" for r in programs)

  for label, key in rows:
    lines.append(line(label, lambda r, key=key: _size(r["memory"].get(key), unit)))
    if key == "teacher_params" and len(plan.get("teachers", ())) > 1:  # several teachers: each one's share
      for member in plan["teachers"]:
        lines.append(line(f"  {member['name']}", lambda r, b=member["params_bytes"]: _size(b, unit)))
  if hbm < 2**60:
    lines.append(line("HBM margin", lambda r: _size(hbm - r["memory"]["total"], unit)))
  lines.append(line("fits", lambda r: "yes" if r["fits"] else "NO"))
  lines.append(line("compile (s)", lambda r: r["compile_seconds"]))
  lines.append("")
  for path, found in plan["largest_batch"].items():
    bound = "exact" if found["exact"] else f"lower bound after {found['compiles']} compiles"
    lines.append(f"largest per_device_batch_size that fits ({path}): {found['largest_fitting']} ({bound})")
  f = plan["flops_per_device"]
  lines.append(
      f"FLOPs per step per device (MaxText's calculator): {f['total']:.3e} = student fwd+bwd {f['student_fwd_bwd']:.3e}"
      f" + teacher fwd {f['teacher_fwd']:.3e}"
      + (
          " (" + ", ".join(f"{name} {v:.3e}" for name, v in f["teacher_fwd_by_name"].items()) + ")"
          if len(f.get("teacher_fwd_by_name", {})) > 1
          else ""
      )
  )
  if plan["step_seconds_lower_bound"] is not None:
    lines.append(f"step time lower bound at the device's peak: {plan['step_seconds_lower_bound'] * 1e3:.1f} ms")
  for path, r in plan["paths"].items():
    if "collectives" not in r:
      lines.append(f"{path}: {r['error']}")
      continue
    c = r["collectives"]
    kinds = ", ".join(_kind_line(k, v) for k, v in sorted(c["by_kind"].items())) or "none"
    vocab = c["vocabulary_sized"]
    lines.append(f"{path} collectives per step: {kinds}")
    shapes = f" ({'; '.join(vocab['in_loop_shapes'])})" if vocab["in_loop_shapes"] else ""
    lines.append(
        f"{path} vocabulary-sized: {vocab['count']}x {_bytes(vocab['bytes'])}, inside loops {vocab['in_loop_count']}x"
        f" {_bytes(vocab['in_loop_bytes'])}{shapes}"
    )
    buffers = r["sequence_vocab_buffers"]
    lines.append(f"{path} [B, S, V] buffers: {', '.join(buffers) if buffers else 'none'}")
  lines.append("")
  lines.append(f"{'FITS' if plan['fits'] else 'DOES NOT FIT'} ({plan['fits_decided_by']} on {target['name']})")
  return "\n".join(lines)


def write_json(plan: dict, path: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(plan, f, indent=2, sort_keys=True)
    f.write("\n")
