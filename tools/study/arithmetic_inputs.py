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

"""What every arm of the addition study starts from: the chats, a teacher trained on them by MaxText's own
``pre_train.train`` (reused while its data, steps and YAML are unchanged), the student pruned from it, and the
uniform teacher of the no-teacher control."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

from absl import logging
import numpy as np

from maxtext_distill_plugin.configuration import config as config_lib
from maxtext_distill_plugin.demo import plan as demo_plan_lib
from tools.study import arithmetic_arms
from tools.study import arithmetic_data

MODEL_YAML = "study-arith-model.yml"
STUDY_YAML = "study-arith.yml"
KEEP_LAYERS = (0, 3)  # of the teacher's 4: the student keeps the first and the last, as the demo's does


@dataclasses.dataclass(frozen=True)
class TaskPlan:
  """How much work the study does."""

  digits: int
  train_size: int
  eval_size: int
  teacher_steps: int
  steps: int
  seeds: tuple[int, ...]
  arms: tuple[str, ...]
  curve_points: int  # checkpoints per run (evenly spaced, the last included) scored for the learning curves
  train: bool = True  # False: tabulate the finished runs only (``--report-only``)


@dataclasses.dataclass(frozen=True)
class TaskInputs:
  """The chats, the teacher, the pruned student and the uniform teacher."""

  data: arithmetic_data.ArithmeticData
  teacher_items: str
  pruned_items: str
  uniform_items: str
  teacher_seconds: float  # training the teacher (0 when reused)


def _stamp(data: arithmetic_data.ArithmeticData, steps: int) -> dict:
  return {"data": data.stats, "steps": steps, "yaml": demo_plan_lib.file_sha(config_lib.resolve_yaml(MODEL_YAML))}


def teacher_command(root: str, data: arithmetic_data.ArithmeticData, steps: int) -> list[str]:
  """MaxText's own training of the teacher on the chats (completion-only CE), as a command line."""
  return [
      sys.executable,
      "-m",
      "maxtext.trainers.pre_train.train",
      config_lib.resolve_yaml(MODEL_YAML),
      "run_name=teacher",
      f"base_output_directory={root}",
      f"steps={steps}",
      f"log_period={max(1, min(100, steps))}",
      *data.maxtext_args(),
  ]


def ensure_teacher(root: str, data: arithmetic_data.ArithmeticData, steps: int) -> tuple[str, float]:
  """The teacher's ``items`` directory (trained unless a matching one exists) and the seconds training took."""
  run_dir = os.path.join(root, "teacher")
  stamp_path = os.path.join(run_dir, "study-stamp.json")
  items = demo_plan_lib.latest_items(os.path.join(run_dir, "checkpoints"))
  if items and demo_plan_lib.read_json(stamp_path) == _stamp(data, steps):
    logging.info("Teacher reused: %s", items)
    return items, 0.0
  shutil.rmtree(run_dir, ignore_errors=True)
  os.makedirs(run_dir)
  log_path = os.path.join(root, "teacher-train.log")
  cmd = teacher_command(root, data, steps)
  logging.info("Training the teacher (%d steps; log %s)", steps, log_path)
  started = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    code = subprocess.run(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={"JAX_PLATFORMS": "cpu", **os.environ}, check=False
    )
  if code.returncode != 0:
    with open(log_path, encoding="utf-8") as f:
      tail = "".join(f.readlines()[-30:])
    raise RuntimeError(f"the teacher's training failed (exit {code.returncode}); last lines of {log_path}:\n{tail}")
  items = demo_plan_lib.latest_items(os.path.join(run_dir, "checkpoints"))
  if items is None:
    raise RuntimeError(f"MaxText's training wrote no checkpoint under {run_dir}.")
  with open(stamp_path, "w", encoding="utf-8") as f:
    json.dump(_stamp(data, steps), f)
  return items, time.perf_counter() - started


def write_uniform_teacher(teacher_items: str, dst_items: str) -> str:
  """A copy of the teacher whose unembedding kernel is zero: its logits are 0, its distribution uniform."""
  from maxtext.common import checkpointing  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.student import pruning  # pylint: disable=import-outside-toplevel

  params = pruning.read_params(teacher_items)
  dense = params["params"]["decoder"]["logits_dense"]
  dense["kernel"] = np.zeros_like(dense["kernel"])
  shutil.rmtree(os.path.dirname(dst_items), ignore_errors=True)
  os.makedirs(os.path.dirname(os.path.dirname(dst_items)), exist_ok=True)
  checkpointing.save_params_to_path(os.path.dirname(dst_items), params)
  return dst_items


def prepare(root: str, plan: TaskPlan) -> TaskInputs:
  """Chats, teacher, pruned student and uniform teacher under ``root``."""
  from maxtext_distill_plugin.student import pruning  # pylint: disable=import-outside-toplevel

  root = os.path.abspath(root)
  data = arithmetic_data.prepare(
      os.path.join(root, "data"), digits=plan.digits, train_size=plan.train_size, eval_size=plan.eval_size
  )
  logging.info("Addition chats: %s", data.stats)
  teacher_items, seconds = ensure_teacher(root, data, plan.teacher_steps)
  models = os.path.join(root, "models")
  pruned = os.path.join(models, "pruned", "0", "items")
  uniform = os.path.join(models, "uniform", "0", "items")
  if seconds or not (os.path.isdir(pruned) and os.path.isdir(uniform)):  # both follow from the teacher alone
    shutil.rmtree(models, ignore_errors=True)
    pruning.prune_layers(teacher_items, pruned, list(KEEP_LAYERS))
    write_uniform_teacher(teacher_items, uniform)
  return TaskInputs(data, teacher_items, pruned, uniform, seconds)


ALL_ARMS = tuple(arm.name for arm in arithmetic_arms.ARMS)
FULL = TaskPlan(
    digits=2,
    train_size=8000,
    eval_size=256,
    teacher_steps=1000,
    steps=150,
    seeds=(0, 1, 2),
    arms=ALL_ARMS,
    curve_points=3,
)
QUICK = TaskPlan(
    digits=2, train_size=500, eval_size=64, teacher_steps=20, steps=4, seeds=(0,), arms=ALL_ARMS, curve_points=2
)
