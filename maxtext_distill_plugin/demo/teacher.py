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

"""The demo's teacher: ``configs/demo-model.yml`` pre-trained by MaxText's own ``pre_train.train`` in a
subprocess, and reused on the next run when a stamp says its data, steps and YAML are unchanged."""

import json
import os
import re
import shutil
import subprocess
import sys

from maxtext_distill_plugin.demo import data as demo_data
from maxtext_distill_plugin.demo import plan as plan_lib

_STEP_LINE = re.compile(r"completed step: (\d+), seconds: ([\d.]+).*?\bloss: ([\d.]+)")


def _subprocess_env() -> dict:
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def _teacher_stamp(data: demo_data.DemoData, steps: int) -> dict:
  yamls = {name: plan_lib.file_sha(plan_lib.yaml_path(name)) for name in (plan_lib.MODEL_YAML,)}
  return {"data": data.fingerprint, "steps": steps, "yaml": yamls}


def pretrain_command(paths: plan_lib.Paths, data: demo_data.DemoData, steps: int) -> list[str]:
  """MaxText's own pre-training of the teacher, as a command line."""
  return [
      sys.executable,
      "-m",
      "maxtext.trainers.pre_train.train",
      plan_lib.yaml_path(plan_lib.MODEL_YAML),
      "run_name=teacher",
      f"base_output_directory={paths.root}",
      f"steps={steps}",
      f"log_period={max(1, min(100, steps))}",
      *data.maxtext_args(),
  ]


def _run_logged(cmd: list[str], log_path: str, total_steps: int) -> None:
  """Runs ``cmd``, writing all its output to ``log_path`` and echoing the loss seven times along the way."""
  echo_every = max(1, total_steps // 7)
  popen_args = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "env": _subprocess_env()}
  with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(cmd, **popen_args) as proc:
    log.write(" ".join(cmd) + "\n")
    for line in proc.stdout:
      log.write(line)
      match = _STEP_LINE.search(line)
      if match and (int(match.group(1)) + 1) % echo_every == 0:
        step, seconds, loss = int(match.group(1)) + 1, float(match.group(2)), float(match.group(3))
        print(f"  teacher step {step}/{total_steps}: train loss {loss:.3f} ({seconds:.2f}s/step)", flush=True)
    code = proc.wait()
  if code != 0:
    with open(log_path, encoding="utf-8") as f:
      tail = f.readlines()[-30:]
    raise RuntimeError(f"{cmd[2]} failed with exit code {code}; last lines of {log_path}:\n{''.join(tail)}")


def ensure_teacher(paths: plan_lib.Paths, data: demo_data.DemoData, steps: int) -> tuple[str, bool]:
  """The teacher's ``items`` directory, pre-training it unless a matching one exists; ``(path, reused)``."""
  stamp_path = os.path.join(paths.teacher_run, "demo-stamp.json")
  stamp = _teacher_stamp(data, steps)
  items = plan_lib.latest_items(os.path.join(paths.teacher_run, "checkpoints"))
  if items and plan_lib.read_json(stamp_path) == stamp:
    return items, True
  shutil.rmtree(paths.teacher_run, ignore_errors=True)
  os.makedirs(paths.teacher_run, exist_ok=True)
  _run_logged(pretrain_command(paths, data, steps), os.path.join(paths.root, "teacher-pretrain.log"), steps)
  items = plan_lib.latest_items(os.path.join(paths.teacher_run, "checkpoints"))
  if items is None:
    raise RuntimeError(f"MaxText's pre-training wrote no checkpoint under {paths.teacher_run}.")
  with open(stamp_path, "w", encoding="utf-8") as f:
    json.dump(stamp, f)
  return items, False
