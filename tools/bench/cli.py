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

"""The benchmark's command line: which shapes and how long, measure or re-render, write the report and plot."""

import argparse
import contextlib
import dataclasses
import datetime
import json
import pathlib
import shlex
import sys
import tempfile
import time

from absl import logging

import tools.bench
from tools.bench import report as report_lib
from tools.bench import runner
from tools.bench import shapes
from tools.bench import tables
from tools.bench import workers


def parse_shapes(text: str) -> tuple[shapes.Shape, ...]:
  """``"32768x1024,1024x256"`` (vocab x seq) with the full run's widths."""
  found = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    vocab, seq = item.lower().split("x")
    found.append(shapes.Shape(vocab=int(vocab), seq=int(seq)))
  return tuple(found)


def parse_args(argv: list[str]):
  parser = argparse.ArgumentParser(description=tools.bench.__doc__.split("\n", 1)[0])
  parser.add_argument("--out", default=str(shapes.REPO / "docs" / "benchmarks.md"), help="Markdown report to write")
  parser.add_argument("--plot", default=None, help="PNG plot (default: benchmarks_memory.png beside --out)")
  parser.add_argument("--json", default=None, help="also write the raw results as JSON here")
  parser.add_argument("--quick", action="store_true", help="one tiny shape, 2 rounds (< ~60 s): the smoke test")
  parser.add_argument("--shapes", default=None, help="vocab x seq list, e.g. 32768x1024,1024x256 (full widths)")
  parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per shape (default 5; quick 2)")
  parser.add_argument("--work-dir", default=None, help="teachers, YAMLs, worker logs (default: a temp dir)")
  parser.add_argument(
      "--chunked-args", default="", help="extra key=value for ours_chunked, e.g. distill_vocab_chunk=8192"
  )
  parser.add_argument("--from-json", default=None, help="re-render the report of a saved --json run; measures nothing")
  parser.add_argument("--teacher-checkpoint", default=None, help="quick only: reuse this tiny teacher's items dir")
  parser.add_argument("--worker", choices=shapes.VARIANTS, help=argparse.SUPPRESS)
  parser.add_argument("--yaml", help=argparse.SUPPRESS)
  parser.add_argument("--run-dir", help=argparse.SUPPRESS)
  parser.add_argument("--set", action="append", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def reproduce_command(args) -> str:
  """The command line that reruns this benchmark (scratch paths left out)."""
  shown = ["--out", args.out] + (["--quick"] if args.quick else [])
  shown += ["--shapes", args.shapes] if args.shapes else []
  shown += ["--rounds", str(args.rounds)] if args.rounds else []
  shown += ["--chunked-args", args.chunked_args] if args.chunked_args else []
  return "python tools/bench_distill.py " + shlex.join(shown)


def measure(args) -> dict:
  """Runs the benchmark described by the command line; returns the report (rows plus context)."""
  started = time.perf_counter()
  env = runner.environment()
  chosen = (shapes.QUICK_SHAPE,) if args.quick else parse_shapes(args.shapes) if args.shapes else shapes.FULL_SHAPES
  plan = runner.Plan(rounds=args.rounds or 5, round_target_s=1.0)
  if args.quick:
    plan = runner.Plan(rounds=args.rounds or 2, round_target_s=0.3, xla_flags=shapes.QUICK_XLA_FLAGS)
  extra = {"ours_chunked": shlex.split(args.chunked_args)}
  with contextlib.ExitStack() as stack:
    work_dir = args.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_distill_"))
    teacher = args.teacher_checkpoint if args.quick else None
    rows = [runner.measure_shape(shape, pathlib.Path(work_dir), plan, extra, teacher) for shape in chosen]
  return {
      "command": reproduce_command(args),
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "environment": env,
      "plan": dataclasses.asdict(plan),
      "rows": rows,
      "wall_s": time.perf_counter() - started,
  }


def write_outputs(report: dict, out: pathlib.Path, plot: pathlib.Path) -> None:
  report["plot_name"] = plot.name if report_lib.write_plot(report["rows"], plot) else None
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(report_lib.render_markdown(report), encoding="utf-8")
  logging.info("Wrote %s (%s)", out, plot if report["plot_name"] else "no plot")


def main(argv: list[str] | None = None) -> int:
  args = parse_args(list(sys.argv[1:] if argv is None else argv))
  if args.worker:
    return workers.worker_main(args)
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  out = pathlib.Path(args.out)
  plot = pathlib.Path(args.plot) if args.plot else out.with_name("benchmarks_memory.png")
  if args.from_json:
    report = json.loads(pathlib.Path(args.from_json).read_text(encoding="utf-8"))
  else:
    report = measure(args)
    logging.info("Measured in %.0fs", report["wall_s"])
  if args.json and not args.from_json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
  write_outputs(report, out, plot)
  return 1 if tables.failures(report["rows"]) else 0
