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

"""Lowers and compiles one program of a run for the target, and reads its memory per device.

A program that does not fit the target's HBM is a result, not an error: libtpu refuses it at compile time with a
RESOURCE_EXHAUSTED message (the planner keeps the figures it names), and on the host target the compiled total is
compared with the ``--hbm-gib`` budget.
"""

import dataclasses
import re
import time

import jax

_OOM_MARKERS = ("resource_exhausted", "out of memory", "exceeds the hbm", " hbm")
_USED = re.compile(r"[Uu]sed\s+([\d.]+)([KMGT]?)i?B?\s+of\s+([\d.]+)([KMGT]?)i?B?\s+hbm")
# libtpu 0.0.50.1 refuses early, before buffer assignment, naming the temporaries alone: "the total memory required
# for HLO temporaries (197.77G) exceeds available HBM (95.73G)".
_TEMPORARIES = re.compile(
    r"required for HLO temporaries\s*\(([\d.]+)([KMGT]?)i?B?\)\s*exceeds available HBM\s*\(([\d.]+)([KMGT]?)"
)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclasses.dataclass
class ProgramResult:
  """One compiled program: per-device memory (MaxText's total: argument + output - alias + temp), or the refusal."""

  name: str
  fits: bool
  compile_seconds: float
  argument_bytes: int = 0
  output_bytes: int = 0
  alias_bytes: int = 0
  temp_bytes: int = 0
  total_bytes: int = 0
  error: str | None = None
  hlo_text: str = dataclasses.field(default="", repr=False)
  hlo_flops: float | None = None  # XLA's cost analysis: counts each loop body once

  def memory(self) -> dict:
    return {
        "argument": self.argument_bytes,
        "output": self.output_bytes,
        "alias": self.alias_bytes,
        "temp": self.temp_bytes,
        "total": self.total_bytes,
    }


def is_out_of_memory(error: Exception) -> bool:
  message = str(error).lower()
  return any(marker in message for marker in _OOM_MARKERS)


def _bytes(number: str, unit: str) -> int:
  return int(float(number) * _UNITS[unit])


def used_of_hbm(message: str) -> tuple[int, int] | None:
  """``(used, available)`` bytes from libtpu's "Used X of Y hbm" message, when it names them."""
  match = _USED.search(message)
  if not match:
    return None
  return _bytes(match.group(1), match.group(2)), _bytes(match.group(3), match.group(4))


def temporaries_over_hbm(message: str) -> int | None:
  """The temporaries' bytes from libtpu's early refusal ("required for HLO temporaries (X) exceeds available HBM")."""
  match = _TEMPORARIES.search(message)
  return _bytes(match.group(1), match.group(2)) if match else None


def compile_program(name: str, jitted, args, *, mesh, rules, hbm_bytes: int) -> ProgramResult:
  """Lowers ``jitted`` on the abstract ``args`` under ``mesh`` and MaxText's logical ``rules``, then compiles."""
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel

  started = time.perf_counter()
  try:
    with jax.set_mesh(mesh), nn_partitioning.axis_rules(rules):
      lowered = jitted.lower(*args)
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-exception-caught  # an OOM is a result; anything else re-raised
    if not is_out_of_memory(e):
      raise
    seconds = time.perf_counter() - started
    figures = used_of_hbm(str(e))
    used = figures[0] if figures else 0
    first_line = str(e).strip().splitlines()[0][:500]
    # The early refusal names only the temporaries: kept as temp, the total left for the caller (it knows the state).
    return ProgramResult(
        name, False, seconds, temp_bytes=temporaries_over_hbm(str(e)) or 0, total_bytes=used, error=first_line
    )
  seconds = time.perf_counter() - started
  stats = compiled.memory_analysis()
  argument, output = int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes)
  alias, temp = int(stats.alias_size_in_bytes), int(stats.temp_size_in_bytes)
  total = argument + output - alias + temp
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  flops = float(cost.get("flops", 0.0)) if isinstance(cost, dict) else None
  return ProgramResult(
      name,
      total <= hbm_bytes,
      seconds,
      argument,
      output,
      alias,
      temp,
      total,
      hlo_text=compiled.as_text(),
      hlo_flops=flops,
  )
