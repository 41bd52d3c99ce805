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

"""The study's command line: which plan and arms, a run or a replot, and the table printed at the end."""

import argparse
import dataclasses
import os
import sys

import tools.study
from tools.study import arms as arms_lib
from tools.study import common
from tools.study import inputs as inputs_lib
from tools.study import on_policy_study
from tools.study import report
from tools.study import runner


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=tools.study.__doc__.split("\n", maxsplit=1)[0])
  parser.add_argument("--output-dir", default=None, help="demo root: data/ and teacher/ (shared with the demo), study/")
  parser.add_argument("--quick", action="store_true", help="tiny corpus, teacher and step counts (smoke test)")
  parser.add_argument("--steps", type=int, default=None, help="override the distillation steps per run")
  parser.add_argument("--seeds", type=int, default=None, help="number of seeds of the main arms")
  parser.add_argument("--ablations", type=int, default=None, help="how many ablations, in priority order, at most")
  parser.add_argument("--budget-minutes", type=float, default=None, help="no new ablation once this is projected")
  parser.add_argument("--no-upstream", action="store_true", help="skip the attempt at upstream's trainer")
  parser.add_argument("--plots-dir", default=None, help="where the PNGs go (default: <output-dir>/study)")
  parser.add_argument("--replot", action="store_true", help="only redraw the plots and results.md from results.json")
  parser.add_argument(
      "--arms",
      default=None,
      help=f"comma-separated arms trained for every seed instead of the main ones; any of {', '.join(arms_lib.BY_NAME)}",
  )
  args = parser.parse_args(argv)
  common.check_arms_flag(parser, args.arms, arms_lib.select)
  return args


def plan_from_args(args: argparse.Namespace) -> inputs_lib.StudyPlan:
  plan = inputs_lib.QUICK if args.quick else inputs_lib.FULL
  changes = {
      "steps": args.steps,
      "eval_interval": max(1, args.steps // 8) if args.steps else None,
      "seeds": tuple(range(args.seeds)) if args.seeds else None,
      "ablations": args.ablations,
      "budget_s": args.budget_minutes * 60 if args.budget_minutes else None,
      "arms": tuple(arm.name for arm in arms_lib.select(args.arms)) if args.arms else None,
  }
  return dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  common.quiet_logging()
  plan = plan_from_args(args)
  root = os.path.abspath(args.output_dir or (os.path.join("demo_output", "quick") if args.quick else "demo_output"))
  if plan.arms and arms_lib.BY_NAME[plan.arms[0]].sft:
    results = on_policy_study.run(root, plan, args.plots_dir)
    print(on_policy_study.markdown_report(results))
    print(f"Results: {os.path.join(root, 'study', 'onpolicy', 'results.json')}; plots: {', '.join(results['plots'])}")
    return 0
  if args.replot:
    results = runner.replot(os.path.join(root, "study"), args.plots_dir)
  else:
    results = runner.run_study(
        root, plan, upstream=plan.upstream_timeout_s > 0 and not args.no_upstream, plots_dir=args.plots_dir
    )
  print(report.markdown_report(results))
  print(f"Results: {os.path.join(root, 'study', 'results.json')}; plots: {', '.join(results['plots']) or 'none'}")
  return 0
