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

"""The README's main job, in its --fast form: every stage runs and distillation lowers the pruned student's CE."""

import json
import math

from tests.conftest import run_cli


def test_demo_fast_recovers_the_pruned_student(tmp_path):
  proc = run_cli("--output-dir", str(tmp_path / "demo"), "--fast", module="maxtext_distill_plugin.demo", timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "student after distillation" in proc.stdout
  results = json.loads((tmp_path / "demo" / "results.json").read_text(encoding="utf-8"))
  ce = results["cross_entropy"]
  assert all(math.isfinite(v) for v in ce.values())
  assert ce["distilled_student"] < ce["pruned_student"] - 0.1
  # The trainer's own eval and the demo's independent evaluation agree on the same held-out batches.
  assert abs(results["trainer_eval"]["eval/hard_loss"] - ce["distilled_student"]) < 1e-3
