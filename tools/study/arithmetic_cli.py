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

"""The addition study's command line: the plan (full, ``--quick`` or changed by flags), the run, the table."""

import argparse
import dataclasses
import os
import sys

from tools.study import arithmetic_arms
from tools.study import arithmetic_inputs
from tools.study import arithmetic_report
from tools.study import common


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description="On-policy distillation on addition: seven arms, one pruned student.")
  parser.add_argument("--output-dir", default=None, help="data, teacher, runs and results (default demo_output/arith)")
  parser.add_argument("--quick", action="store_true", help="2-digit problems, a few steps, one seed (smoke test)")
  parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (the same for every arm)")
  parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 of every arm")
  parser.add_argument("--teacher-steps", type=int, default=None, help="steps of the teacher's training")
  parser.add_argument("--digits", type=int, default=None, help="digits of each addend")
  parser.add_argument("--plots-dir", default=None, help="where the PNG goes (default: the output directory)")
  parser.add_argument("--report-only", action="store_true", help="train nothing: tabulate the runs that finished")
  parser.add_argument("--arms", default=None, help=f"comma-separated arms, any of {', '.join(arithmetic_arms.BY_NAME)}")
  args = parser.parse_args(argv)
  common.check_arms_flag(parser, args.arms, arithmetic_arms.select)
  for name in ("steps", "seeds", "teacher_steps", "digits"):
    value = getattr(args, name)
    if value is not None and value < 1:
      parser.error(f"--{name.replace('_', '-')}={value}: must be at least 1.")
  if args.digits is not None and args.digits > 2:
    # configs/study-arith-model.yml holds 12 positions: a 7-token prompt and 5 new tokens, i.e. 2-digit problems.
    parser.error(f"--digits={args.digits}: at most 2 fit max_target_length 12 of configs/study-arith-model.yml.")
  return args


def plan_from_args(args: argparse.Namespace) -> arithmetic_inputs.TaskPlan:
  plan = arithmetic_inputs.QUICK if args.quick else arithmetic_inputs.FULL
  changes = {
      "steps": args.steps,
      "seeds": tuple(range(args.seeds)) if args.seeds else None,
      "teacher_steps": args.teacher_steps,
      "digits": args.digits,
      "arms": tuple(arm.name for arm in arithmetic_arms.select(args.arms)) if args.arms else None,
      "train": False if args.report_only else None,
  }
  return dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  common.quiet_logging()
  from tools.study import arithmetic_study  # pylint: disable=import-outside-toplevel

  plan = plan_from_args(args)
  root = args.output_dir or os.path.join("demo_output", "arith-quick" if args.quick else "arith")
  results = arithmetic_study.run(root, plan, args.plots_dir)
  print(arithmetic_report.markdown_report(results))
  print(f"Results: {os.path.join(os.path.abspath(root), 'results.json')}; plots: {', '.join(results['plots'])}")
  return 0
