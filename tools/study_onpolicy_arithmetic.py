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

"""Does on-policy distillation pay on a task the teacher solves? Six arms on multi-digit addition, on a CPU.

  .venv/bin/python tools/study_onpolicy_arithmetic.py [--output-dir demo_output/arith] [--quick] [--steps N]
      [--seeds N] [--arms sft,seqkd,offpolicy_kd,onpolicy_1,onpolicy_0.5,control_uniform,sft_then_onpolicy]
      [--plots-dir docs]

Made locally, nothing downloaded: addition chats with a character-level tokenizer
(:mod:`tools.study.arithmetic_data`), a 4-layer teacher trained on them by MaxText's own ``pre_train.train``, and a
2-layer student pruned from it; then the arms (the six of issue 20 and SFT then on-policy) of
:mod:`tools.study.arithmetic_arms`, each trained by the plugin's trainer for every seed with the same steps, batch
and data order, and scored on the held-out problems (greedy exact match, the teacher's NLL of the greedy answers,
held-out CE; :mod:`tools.study.arithmetic_study`).
Writes ``<output-dir>/results.json``, ``results.md`` and ``onpolicy_arithmetic.png``.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from tools.study import arithmetic_cli  # pylint: disable=wrong-import-position

if __name__ == "__main__":
  sys.exit(arithmetic_cli.main())
