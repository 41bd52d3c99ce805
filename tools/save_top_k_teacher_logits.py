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

"""Caches a teacher's top-k log-probabilities: a path-runnable alias of the package module.

  python tools/save_top_k_teacher_logits.py <config.yml> key=value ... offline_data_dir=<out> [--top-k N]

Same arguments as ``python -m maxtext_distill_plugin.save_top_k_teacher_logits``.
"""

import os
import runpy
import sys

if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a source checkout wins
  runpy.run_module("maxtext_distill_plugin.save_top_k_teacher_logits", run_name="__main__", alter_sys=True)
