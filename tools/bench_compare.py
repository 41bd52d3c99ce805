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

"""This checkout's step against another commit's, back to back (a regression's before and after).

    git worktree add --detach /tmp/reference 36427e0
    JAX_PLATFORMS=cpu python tools/bench_compare.py /tmp/reference [--shape 32768x1024] [--rounds 5]

Starts the benchmark's own worker processes (``tools/bench_distill.py --worker``) from both checkouts, each
checkout's lean and dense steps and this checkout's floor (MaxText's own step), on one YAML and one teacher, then
interleaves their rounds in rotating order so that the machine's load falls on all of them alike. Prints each
variant's median step time, and the median (and range) of the per-round ratios: each path of this checkout over the
same path of the other, and each path of both over the floor.
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tools.bench import cli  # pylint: disable=wrong-import-position
from tools.bench import runner  # pylint: disable=wrong-import-position
from tools.bench import shapes  # pylint: disable=wrong-import-position

_PATHS = ("ours_chunked", "ours_dense")


def _ratio(rounds_a: list[float], rounds_b: list[float]) -> str:
  ratios = [a / b for a, b in zip(rounds_a, rounds_b)]
  return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("reference", type=pathlib.Path, help="the other commit's checkout (e.g. a git worktree)")
  parser.add_argument("--shape", default="32768x1024", help="vocab x seq (full widths), as bench_distill's --shapes")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--work-dir", default=None, help="teacher, YAML, worker logs (default: a temp dir)")
  args = parser.parse_args()
  reference = args.reference.resolve()
  if not (reference / runner.ENTRY.relative_to(shapes.REPO)).exists():
    parser.error(f"{reference} has no tools/bench_distill.py: pass a checkout of this repository")

  work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="bench_compare_"))
  shape = cli.parse_shapes(args.shape)[0]
  teacher = shapes.make_teacher(shape, work)
  yaml_path = shapes.write_yaml(shape, teacher, work / "configs" / f"{shape.name}.yml")
  plan = runner.Plan(rounds=args.rounds)
  workers = {}
  for tag, checkout in (("this", shapes.REPO), ("reference", reference)):
    for variant in _PATHS + (("floor",) if tag == "this" else ()):
      workers[f"{tag}:{variant}"] = runner.Worker(
          variant, yaml_path, work / "runs" / tag, [], plan.xla_flags, checkout=checkout
      )
  order = list(workers.values())
  try:
    for worker in order:
      worker.wait_ready(plan.ready_timeout_s)
    for index in range(plan.rounds):
      for worker in order[index % len(order) :] + order[: index % len(order)]:
        worker.run_round(runner.steps_for_round(worker, plan), plan.step_timeout_s)
  finally:
    for worker in order:
      worker.finish()

  medians = {name: [statistics.median(r) for r in w.rounds] for name, w in workers.items()}
  print(json.dumps({name: statistics.median(rounds) for name, rounds in medians.items()}, indent=1))
  print(f"{shape.name}, {plan.rounds} rounds, reference {reference}")
  for path in _PATHS:
    print(f"this / reference, {path}: {_ratio(medians[f'this:{path}'], medians[f'reference:{path}'])}")
    for tag in ("this", "reference"):
      print(f"{tag} {path} / floor: {_ratio(medians[f'{tag}:{path}'], medians['this:floor'])}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
