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

"""Did the step get slower? Runs the benchmark at one small shape and compares its ratios with docs/benchmarks.md.

    python tools/bench_check.py [--shapes 32768x256] [--rounds 4] [--margin 0.15]

Exit 0 when every checked ratio (ours lean / the floor, ours dense / the floor; medians of per-round ratios
measured back to back) is at most the documented ratio times ``1 + margin``; 1 when one is above it or could not be
measured. ``make bench-check`` runs it (a few minutes on 2 idle cores; not part of ``make test``). The documented
ratios are the ones in the step-time table of ``--doc``; a shape missing there fails.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from tools.bench import check  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--shapes", default="32768x256", help="vocab x seq list; each must be in --doc's table")
  parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per shape")
  parser.add_argument("--margin", type=float, default=check.DEFAULT_MARGIN, help="allowed excess over the doc")
  parser.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="the documented ratios")
  parser.add_argument("--from-json", default=None, help="check a saved bench_distill.py --json run; measures nothing")
  args = parser.parse_args(argv)
  documented = check.documented_ratios(pathlib.Path(args.doc).read_text(encoding="utf-8"))
  with tempfile.TemporaryDirectory(prefix="bench_check_") as scratch:
    results = args.from_json
    if results is None:
      results = str(pathlib.Path(scratch) / "bench.json")
      cmd = [sys.executable, str(REPO / "tools" / "bench_distill.py"), "--shapes", args.shapes]
      cmd += ["--rounds", str(args.rounds), "--json", results, "--out", str(pathlib.Path(scratch) / "bench.md")]
      # The benchmark's own exit status judges its absolute targets, not a regression: only its JSON is used.
      subprocess.run(cmd, cwd=REPO, check=False)
      if not pathlib.Path(results).is_file():
        print("FAIL the benchmark wrote no results")
        return 1
    rows = json.loads(pathlib.Path(results).read_text(encoding="utf-8"))["rows"]
  verdicts = check.compare(rows, documented, args.margin)
  for verdict in verdicts:
    print(verdict.line())
  return 0 if verdicts and all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
  sys.exit(main())
