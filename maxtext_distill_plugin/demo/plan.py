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

"""The demo's fixed choices: its YAMLs, the layers the student keeps, how much work each stage does, where it
writes, and small file helpers the stages share."""

import contextlib
import dataclasses
import hashlib
import json
import os
import time

MODEL_YAML = "demo-model.yml"
RECIPE_YAML = "demo-pruning-recovery.yml"
# First and last layer: of the 2-of-4 choices this one starts worst and recovers best (measured on this demo).
KEEP_LAYERS = (0, 3)


@dataclasses.dataclass(frozen=True)
class Plan:
  """How much work each stage does."""

  teacher_steps: int
  distill_steps: int
  eval_batches: int
  max_files: int | None


FULL = Plan(teacher_steps=700, distill_steps=400, eval_batches=16, max_files=None)
FAST = Plan(teacher_steps=12, distill_steps=6, eval_batches=2, max_files=40)


@dataclasses.dataclass
class Paths:
  """Where each stage writes, under one output directory."""

  root: str

  @property
  def data(self) -> str:
    return os.path.join(self.root, "data")

  @property
  def teacher_run(self) -> str:
    return os.path.join(self.root, "teacher")

  @property
  def pruned_items(self) -> str:
    return os.path.join(self.root, "pruned", "0", "items")

  @property
  def student_run(self) -> str:
    return os.path.join(self.root, "student")

  @property
  def results(self) -> str:
    return os.path.join(self.root, "results.json")


class StageTimer:
  """Wall-clock seconds per stage, in order."""

  def __init__(self):
    self.seconds: dict[str, float] = {}

  @contextlib.contextmanager
  def stage(self, name: str):
    print(f"[demo] {name} ...", flush=True)
    start = time.perf_counter()
    yield
    self.seconds[name] = time.perf_counter() - start
    print(f"[demo] {name}: {self.seconds[name]:.1f}s", flush=True)


def yaml_path(name: str) -> str:
  """The path of the shipped YAML ``name`` (``configs/``)."""
  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

  return config.resolve_yaml(name)


def model_max_length() -> int:
  """``max_target_length`` of the demo's model YAML: the longest record the data may hold."""
  import yaml  # pylint: disable=import-outside-toplevel

  with open(yaml_path(MODEL_YAML), encoding="utf-8") as f:
    return int(yaml.safe_load(f)["max_target_length"])


def file_sha(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def latest_items(checkpoint_dir: str) -> str | None:
  """``<checkpoint_dir>/<largest step>/items``, or None when there is none."""
  if not os.path.isdir(checkpoint_dir):
    return None
  steps = [int(d) for d in os.listdir(checkpoint_dir) if d.isdigit()]
  items = [os.path.join(checkpoint_dir, str(s), "items") for s in sorted(steps, reverse=True)]
  return next((p for p in items if os.path.isdir(p)), None)


def read_json(path: str) -> dict | None:
  """The JSON value in ``path``, or None when it is missing or unreadable."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
