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

"""docs/scale.md's table from the planner's JSON reports, one row per report.

    python tools/scale_table.py docs/scale           # every *.json there, rows in file-name order

Each report is ``maxtext-distill plan ... --paths lean,dense,floor --json docs/scale/<row>.json``; a row shows per
device: the total and temporaries of our lean and dense steps, of the floor (MaxText's pre-training step of the
student plus a teacher forward) and of the offline step or the on-policy sampler where compiled, the largest
per_device_batch_size found, the vocabulary-sized collective bytes per step, FLOPs, and the wall time (compiles and
searches) and peak host memory of the planner run.
"""

import json
import pathlib
import re
import sys

GIB = 1024**3
_TEMPORARIES = re.compile(r"required for HLO temporaries \(([\d.]+)G\)")


def _memory(report: dict, path: str) -> str:
  found = report["paths"].get(path)
  if found is None:
    return "-"
  memory = found["memory"]
  if found.get("failed"):
    return "failed to compile"
  if not found["fits"] and "collectives" not in found:
    if memory["total"]:
      return f"OOM ({memory['total'] / GIB:.1f})"
    refused = _TEMPORARIES.search(found.get("error") or "")  # libtpu's early refusal names the temporaries
    return f"OOM (temp {refused.group(1)}G)" if refused else "OOM"
  return f"{memory['total'] / GIB:.2f} / {memory['temp'] / GIB:.2f}"


def _largest(report: dict, path: str) -> str:
  found = report.get("largest_batch", {}).get(path)
  if found is None:
    return "-"
  return f"{found['largest_fitting']}" + ("" if found["exact"] else "+")


def _vocab_bytes(report: dict, path: str) -> str:
  found = report["paths"].get(path, {}).get("collectives")
  if found is None:
    return "-"
  vocab = found["vocabulary_sized"]
  return f"{vocab['bytes'] / 1e9:.2f} ({vocab['in_loop_bytes'] / 1e9:.2f})"


def _model(section: dict) -> str:
  """The model's name, with its depth and width where the report has them (a reshaped student keeps its name)."""
  if "layers" not in section:
    return section["model_name"]
  return f"{section['model_name']} ({section['layers']}x{section['emb_dim']})"


def row(name: str, report: dict) -> str:
  target, flops = report["target"], report["flops_per_device"]
  members = report.get("teachers") or ([report["teacher"]] if report["teacher"] else [])
  teacher = " + ".join(_model(m) for m in members) if members else "offline cache"
  bound = report["step_seconds_lower_bound"]
  cells = [
      name,
      f"{teacher} -> {_model(report['student'])}",
      target["name"],
      f"{report['per_device_batch_size']:g} x {report['max_target_length']}",
      _memory(report, "lean"),
      _memory(report, "dense"),
      _memory(report, "floor"),
      "; ".join(f"{p} {_memory(report, p)}" for p in ("offline", "sampler") if p in report["paths"]) or "-",
      f"{_largest(report, 'lean')} / {_largest(report, 'dense')}",
      f"{_vocab_bytes(report, 'lean')} / {_vocab_bytes(report, 'dense')} / {_vocab_bytes(report, 'floor')}"
      + "".join(f"; {p} {_vocab_bytes(report, p)}" for p in ("offline", "sampler") if p in report["paths"]),
      f"{flops['total']:.2e}" + (f" ({bound * 1e3:.0f} ms)" if bound else ""),
      f"{report['host']['seconds']:.0f} s, {report['host']['peak_rss_bytes'] / GIB:.1f} GiB",
  ]
  return "| " + " | ".join(cells) + " |"


HEADER = (
    "| row | teacher -> student | target | batch x seq | lean total / temp (GiB) | dense total / temp | floor total /"
    " temp | offline step, sampler | max batch lean / dense | vocab-sized collective GB per step (in loops) lean /"
    " dense / floor | FLOPs per device per step (time at peak) | planner wall time, host peak RSS |\n"
    + "|---" * 12
    + "|"
)


def table(directory: pathlib.Path) -> str:
  rows = [row(p.stem, json.loads(p.read_text())) for p in sorted(directory.glob("*.json"))]
  return "\n".join([HEADER] + rows)


def main(argv: list[str]) -> int:
  if len(argv) != 2 or not pathlib.Path(argv[1]).is_dir():
    print(__doc__, file=sys.stderr)
    return 2
  print(table(pathlib.Path(argv[1])))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
