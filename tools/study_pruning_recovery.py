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

"""Pruning-recovery study: SFT against the spec's distillation recipes, on held-out real text, on a CPU.

  .venv/bin/python tools/study_pruning_recovery.py [--output-dir demo_output] [--quick] [--arms a,b,...]

The study lives in :mod:`tools.study` (what it trains, scores and writes is described there); this file is its
command line.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from tools.study import cli  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  sys.exit(cli.main())
