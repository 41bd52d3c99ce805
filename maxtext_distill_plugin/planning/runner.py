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

"""Runs a plan: builds the run's configs for the target, compiles the chosen programs, reads their HLO, and
searches the largest ``per_device_batch_size`` that fits (by compiling the sizes :mod:`search` predicts, a bounded
number of times)."""

import contextlib
import dataclasses
import os
import resource
import time

from absl import logging

from maxtext_distill_plugin.planning import abstract
from maxtext_distill_plugin.planning import compiler
from maxtext_distill_plugin.planning import flops
from maxtext_distill_plugin.planning import gpu
from maxtext_distill_plugin.planning import hlo
from maxtext_distill_plugin.planning import programs
from maxtext_distill_plugin.planning import search
from maxtext_distill_plugin.planning import targets
from maxtext_distill_plugin.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class PlanRequest:
  """What to plan: the run's command line (without the target keys), the target, the programs, the search."""

  argv: tuple[str, ...]
  target: targets.Target
  paths: tuple[str, ...] | None = None  # None: the run's own programs (see default_paths)
  search_paths: tuple[str, ...] | None = None  # None: the run's path; () no search
  max_search_compiles: int = 6
  hlo_dir: str | None = None  # where to write each program's compiled HLO text


def build_configs(request: PlanRequest, per_device_batch_size=None):
  """The run's three configs as a run builds them, with the target's keys (and a batch size) on the command line."""
  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

  extra = [f"{k}={v}" for k, v in request.target.maxtext_keys().items()]
  if per_device_batch_size is not None:
    extra.append(f"per_device_batch_size={per_device_batch_size}")
  return config.build(list(request.argv) + extra, plan=True)


def run_path(configs) -> str:
  """The step program a run of ``configs`` compiles."""
  if configs.offline:
    return "offline"
  chunked = step_lib.use_chunked_loss(configs.settings, configs.student, configs.teacher)
  return "lean" if chunked else "dense"


def default_paths(configs) -> tuple[str, ...]:
  if configs.offline:
    return ("offline",)
  return ("lean", "dense") + (("sampler",) if configs.settings.on_policy else ())


def _program(configs, run, path: str):
  if path in programs.STEP_PATHS:
    return programs.train_step(configs, run, path)
  if path == "sampler":
    return programs.sampler(configs, run)
  return programs.floor(configs, run)


def _shape_sets(configs, num_devices: int) -> tuple[set, set, set]:
  """Vocabulary widths (V and V over each device-count divisor), whole-sequence row counts, and model widths."""
  student = configs.student
  vocab = int(student.vocab_size)
  vocab_sizes = {vocab} | {vocab // n for n in range(2, num_devices + 1) if vocab % n == 0 and num_devices % n == 0}
  seq = int(student.max_target_length)
  rows = int(student.global_batch_size_to_load)
  widths = {int(c.emb_dim) for c in (student, *_teacher_configs(configs).values())}
  return vocab_sizes, {b * seq for b in range(1, rows + 1)}, widths


def _teacher_configs(configs) -> dict:
  """Each teacher's MaxText config by name, in ``teachers:`` order (``teacher`` for the one teacher; none offline)."""
  if configs.teachers:
    return dict(configs.teachers)
  return {} if configs.teacher is None else {"teacher": configs.teacher}


def compile_paths(configs, target: targets.Target, paths, hlo_dir: str | None = None) -> tuple[dict, dict, dict]:
  """Compiles each program in ``paths``; returns per-path reports, the per-device state parts, and each teacher's
  parameters per device by name."""
  mesh = targets.mesh(target, configs.student)
  tail = programs.offline_tail(configs.settings) if configs.offline else None
  run = abstract.build(configs, mesh, tail)
  parts, teacher_parts = abstract.state_parts(run), abstract.teacher_params(run)
  vocab_sizes, seq_rows, widths = _shape_sets(configs, target.num_devices)
  reports = {}
  for path in paths:
    logging.info("planner: compiling %s for %s", path, target.name)
    try:
      jitted, args = _program(configs, run, path)
      with gpu.cross_compiling() if target.platform == "gpu" else contextlib.nullcontext():
        result = compiler.compile_program(
            path, jitted, args, mesh=mesh, rules=configs.student.logical_axis_rules, hbm_bytes=target.hbm_bytes
        )
    except Exception as e:  # pylint: disable=broad-exception-caught  # the other programs' figures still count
      logging.exception("planner: %s failed to compile", path)
      reports[path] = {"fits": False, "failed": True, "error": f"{type(e).__name__}: {str(e)[:500]}"}
      reports[path].update({"compile_seconds": 0.0, "memory": {k: 0 for k in ("argument", "output", "alias")}})
      reports[path]["memory"].update({"temp": 0, "total": 0})
      continue
    logging.info(
        "planner: %s compiled in %.0f s: total %.2f GiB, temp %.2f GiB per device (%s)",
        path,
        result.compile_seconds,
        result.total_bytes / 1024**3,
        result.temp_bytes / 1024**3,
        "fits" if result.fits else "does not fit",
    )
    report = {
        "fits": result.fits,
        "compile_seconds": round(result.compile_seconds, 1),
        "memory": result.memory(),
        "error": result.error,
        "hlo_flops_loop_bodies_once": result.hlo_flops,
    }
    if result.hlo_text and hlo_dir:
      os.makedirs(hlo_dir, exist_ok=True)
      with open(os.path.join(hlo_dir, f"{path}.hlo.txt"), "w", encoding="utf-8") as f:
        f.write(result.hlo_text)
    if result.hlo_text:
      found, unknown_loops = hlo.collectives(result.hlo_text)
      report["collectives"] = hlo.summarize(found, vocab_sizes)
      report["collectives"]["loops_with_unknown_trip_count"] = unknown_loops
      report["sequence_vocab_buffers"] = hlo.sequence_vocab_buffers(result.hlo_text, seq_rows, vocab_sizes, widths)
    reports[path] = report
  return reports, parts, teacher_parts


def largest_batch(request: PlanRequest, path: str, start: int, start_report: dict) -> dict:
  """The largest integer ``per_device_batch_size`` at which ``path`` fits, by compiling the sizes
  :func:`search.next_batch` predicts from the totals so far (at most ``request.max_search_compiles`` compiles).
  ``exact`` when the bracket closed."""
  memory = start_report["memory"]
  fixed = sum(memory.get(k, 0) for k in ("student_params", "student_other", "optimizer_state", "teacher_params"))
  start_total = memory["total"] or (memory["temp"] + fixed if memory["temp"] else 0)
  points = [search.Point(start, start_report["fits"], start_total, fixed)]
  budget = request.target.hbm_bytes
  while len(points) - 1 < request.max_search_compiles:
    size = search.next_batch(points, budget)
    if size is None:
      break
    configs = build_configs(request, size)
    found, parts, _ = compile_paths(configs, request.target, (path,))
    found = found[path]
    if found.get("failed"):
      logging.error("planner: %s at per_device_batch_size=%d failed to compile; search stopped", path, size)
      break
    fixed = sum(parts.values())
    memory = found["memory"]
    # An early refusal names the temporaries alone: the state (fixed) comes on top of them.
    total = memory["total"] or (memory["temp"] + fixed if memory["temp"] else 0)
    points.append(search.Point(size, found["fits"], total, fixed))
    logging.info(
        "planner: %s at per_device_batch_size=%d %s (%.2f GiB)",
        path,
        size,
        "fits" if found["fits"] else "does not fit",
        total / 1024**3,
    )
  low, high = search.bracket(points)
  return {
      "largest_fitting": low,
      "first_not_fitting": high,
      "exact": high is not None and high - low <= 1,
      "compiles": len(points) - 1,
      "tried": {str(p.batch): {"fits": p.fits, "total_bytes": p.total} for p in sorted(points, key=lambda p: p.batch)},
  }


def _shape(config) -> dict:
  return {"model_name": config.model_name, "layers": int(config.num_decoder_layers), "emb_dim": int(config.emb_dim)}


def plan(request: PlanRequest) -> dict:
  """The whole plan as a JSON-ready dict (see :mod:`report`)."""
  started = time.perf_counter()
  configs = build_configs(request)
  student, teacher, target = configs.student, configs.teacher, request.target
  paths = request.paths or default_paths(configs)
  own = run_path(configs)
  reports, parts, teacher_parts = compile_paths(configs, target, paths, request.hlo_dir)
  for report in reports.values():
    report["memory"].update(parts)
  step_flops = flops.per_device(configs)
  plan_report = {
      "config": list(request.argv[1:]),
      "target": dataclasses.asdict(target),
      "student": {**_shape(student), "vocab_size": int(student.vocab_size)},
      "teacher": None if teacher is None else _shape(teacher),
      # Every teacher, its shape and parameters per device (one entry for the one teacher; none offline).
      "teachers": [
          {"name": name, **_shape(config), "params_bytes": teacher_parts[name]}
          for name, config in _teacher_configs(configs).items()
      ],
      "per_device_batch_size": float(student.per_device_batch_size),
      "max_target_length": int(student.max_target_length),
      "gradient_accumulation_steps": int(student.gradient_accumulation_steps),
      "run_path": own,
      "paths": reports,
      # The run's own program decides; without it (--paths), every compiled one must fit.
      "fits_decided_by": own if own in reports else ",".join(reports),
      "fits": reports[own]["fits"] if own in reports else all(r["fits"] for r in reports.values()),
      "flops_per_device": step_flops,
      "step_seconds_lower_bound": flops.step_seconds_lower_bound(step_flops["total"], target.peak_flops),
  }
  search = (own,) if request.search_paths is None else request.search_paths
  pdbs = float(student.per_device_batch_size)
  plan_report["largest_batch"] = {}
  for path in search:
    if path not in reports or pdbs != int(pdbs) or pdbs < 1:
      continue
    plan_report["largest_batch"][path] = largest_batch(request, path, int(pdbs), reports[path])
  plan_report["host"] = {
      "seconds": round(time.perf_counter() - started, 1),
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
  }
  return plan_report
