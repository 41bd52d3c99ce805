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

"""Running the planner as a user does (``python -m maxtext_distill_plugin.plan ...`` in a subprocess) for the plan
tests: one place that builds the command, checks the exit code and reads the JSON report."""

import json
import pathlib
import subprocess
import sys

from tests.conftest import REPO, TINY_YAML, subprocess_env

# Two teachers of the tiny config's shape at V = 1000 and different depths (``teachers:`` instead of
# ``teacher_overrides``), for the planner's accounting of several teachers.
TEACHERS = (("small", 2), ("deep", 3))


def run_planner(*args: str, json_path: pathlib.Path, env: dict | None = None) -> subprocess.CompletedProcess:
  """The planner on ``args`` (config, keys, flags) writing its report to ``json_path``; the finished process."""
  command = [sys.executable, "-m", "maxtext_distill_plugin.plan", *args, "--json", str(json_path)]
  return subprocess.run(command, cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True, check=False)


def lean_plan(out_dir: pathlib.Path, config: tuple[str, ...]) -> dict:
  """The JSON report of the lean step alone (no search) planned for ``config``; the planner must exit 0 (fits)."""
  out = out_dir / "plan.json"
  done = run_planner(*config, "--paths", "lean", "--search", "none", json_path=out)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  return json.loads(out.read_text())


def teachers_yaml(tmp_path: pathlib.Path, teachers=TEACHERS) -> str:
  """The tiny YAML with ``teachers:`` (``(name, layers)`` each, V = 1000, a checkpoint path that does not exist)."""
  text = pathlib.Path(TINY_YAML).read_text(encoding="utf-8")
  single = "teacher_overrides:\n  base_num_decoder_layers: 2\n"
  assert single in text
  entries = "".join(
      f"  - name: {name}\n    overrides: {{base_num_decoder_layers: {layers}, vocab_size: 1000,"
      f" load_parameters_path: /does/not/exist/{name}}}\n"
      for name, layers in teachers
  )
  path = tmp_path / "teachers.yml"
  path.write_text(text.replace(single, "") + "teachers:\n" + entries, encoding="utf-8")
  return str(path)


def params_per_device(layers: int, vocab=1000, emb=64, mlp=128, devices=4) -> int:
  """float32 bytes per device of a MaxText llama2-block decoder: matrices sharded 4 ways, norm scales replicated."""
  matrices = 2 * vocab * emb + layers * (4 * emb * emb + 3 * emb * mlp)
  norms = (2 * layers + 1) * emb
  return 4 * (matrices // devices + norms)


def forward_flops(layers: int, tokens: int, seq: int, vocab=1000, emb=64, mlp=128, heads=4, head_dim=16) -> float:
  """float64 FLOPs of a MaxText llama2-block decoder's forward over ``tokens`` positions: the q, k, v and output
  projections, the gated MLP's three matrices, causal attention (half of the full QK^T and PV), the unembedding."""
  per_layer = 2.0 * tokens * (4 * emb * heads * head_dim + 3 * emb * mlp) + 2.0 * tokens * seq * heads * head_dim
  return layers * per_layer + 2.0 * tokens * emb * vocab
