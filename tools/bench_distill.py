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

"""Lean and fast: our online distillation step against upstream MaxText's and against the floor.

    python tools/bench_distill.py --out docs/benchmarks.md [--quick]

The benchmark itself lives in :mod:`tools.bench` (what it measures and how is described there); this file is its
command line, and also the internal ``--worker`` entry of the worker processes it starts.
"""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from tools.bench import cli  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  sys.exit(cli.main())
