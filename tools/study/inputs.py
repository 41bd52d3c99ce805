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

"""What every arm starts from, and how much work the study does: the demo's data and teacher, a pruned copy of
the teacher, one teacher top-k cache per seed for the offline arm, and each arm's ``config.build`` arguments."""

import dataclasses
import hashlib
import json
import os
import shutil
import time

from absl import logging

from maxtext_distill_plugin.configuration import config as config_lib
from maxtext_distill_plugin.demo import data as demo_data
from maxtext_distill_plugin.demo import pipeline
from maxtext_distill_plugin.demo import plan as demo_plan_lib
from maxtext_distill_plugin.demo import teacher
from tools.study import arms as arms_lib
from tools.study import common


@dataclasses.dataclass(frozen=True)
class StudyPlan:
  """How much work the study does."""

  demo_plan: demo_plan_lib.Plan
  steps: int
  eval_interval: int
  seeds: tuple[int, ...]
  ablations: int
  budget_s: float
  upstream_timeout_s: int
  # The arms trained for every seed (``--arms``); the ablations come on top, as many as ``ablations`` says.
  arms: tuple[str, ...] = tuple(arm.name for arm in arms_lib.MAIN_ARMS)


FULL = StudyPlan(
    demo_plan_lib.FULL,
    steps=300,
    eval_interval=30,
    seeds=(0, 1, 2, 3, 4),
    ablations=len(arms_lib.ABLATIONS),
    budget_s=40 * 60,
    upstream_timeout_s=240,
)
QUICK = StudyPlan(
    demo_plan_lib.FAST, steps=6, eval_interval=3, seeds=(0,), ablations=0, budget_s=90, upstream_timeout_s=0
)


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What every arm starts from; ``fingerprint`` changes when the teacher, the pruning or a study YAML does."""

  data: demo_data.DemoData
  teacher_items: str
  pruned_items: str
  fingerprint: str
  cache_root: str  # one teacher top-k cache per seed below it, for the offline arm

  def cache_dir(self, seed: int) -> str:
    return os.path.join(self.cache_root, f"seed{seed}")


def sha(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _yaml_digest() -> str:
  texts = []
  for name in arms_lib.STUDY_YAMLS:
    with open(config_lib.resolve_yaml(name), encoding="utf-8") as f:
      texts.append(f.read())
  return sha("\n".join(texts))


def prepare_inputs(root: str, study_dir: str, plan: StudyPlan) -> Inputs:
  """The demo's data and teacher under ``root`` (made or reused), and a fresh pruned copy of the teacher."""
  from maxtext_distill_plugin.student import pruning  # pylint: disable=import-outside-toplevel

  paths = demo_plan_lib.Paths(root)
  data = demo_data.prepare(paths.data, chunk_tokens=demo_plan_lib.model_max_length(), max_files=plan.demo_plan.max_files)
  teacher_items, reused = teacher.ensure_teacher(paths, data, plan.demo_plan.teacher_steps)
  logging.info("Teacher %s: %s", "reused" if reused else "pre-trained", teacher_items)
  pruned_root = os.path.join(study_dir, "pruned")
  shutil.rmtree(pruned_root, ignore_errors=True)
  report = pruning.prune_layers(teacher_items, os.path.join(pruned_root, "0", "items"), list(demo_plan_lib.KEEP_LAYERS))
  with open(os.path.join(paths.teacher_run, "demo-stamp.json"), encoding="utf-8") as f:
    stamp = f.read()
  fingerprint = sha(json.dumps([stamp, teacher_items, list(demo_plan_lib.KEEP_LAYERS), _yaml_digest()]))
  return Inputs(data, teacher_items, report.dst_items_dir, fingerprint, os.path.join(study_dir, "caches"))


def arm_argv(
    arm: arms_lib.Arm, inputs: Inputs, run_dir: str, plan: StudyPlan, seed: int, student_items: str
) -> list[str]:
  """``config.build`` arguments of one arm and seed."""
  return [
      *common.run_argv(
          arm.yaml, run_dir, steps=plan.steps, seed=seed, student_items=student_items, teacher_items=inputs.teacher_items
      ),
      f"eval_interval={plan.eval_interval}",
      f"eval_steps={plan.demo_plan.eval_batches}",
      f"log_period={plan.eval_interval}",
      *inputs.data.maxtext_args(),
      *arm.overrides,
      *([f"offline_data_dir={inputs.cache_dir(seed)}"] if arm.offline else []),
  ]


def ensure_cache(inputs: Inputs, plan: StudyPlan, seed: int) -> tuple[str, float]:
  """Writes the teacher's top-k cache of ``seed``'s training batches (the batches arm (b) sees).

  Returns:
    The cache's key (what it was made from) and the seconds it took to write.

  Reused when the teacher, the YAMLs, the seed and the step count are unchanged.
  """
  from maxtext_distill_plugin import save_top_k_teacher_logits as cache_tool  # pylint: disable=import-outside-toplevel

  cache_dir = inputs.cache_dir(seed)
  argv = arm_argv(arms_lib.LOGIT_KD, inputs, os.path.join(cache_dir, "unused"), plan, seed, inputs.pruned_items)
  key = sha(json.dumps([argv, inputs.fingerprint]))
  stamp = os.path.join(cache_dir, "study-stamp.json")
  done = demo_plan_lib.read_json(stamp)
  if done and done.get("key") == key:
    return key, done["seconds"]
  shutil.rmtree(cache_dir, ignore_errors=True)
  os.makedirs(cache_dir)
  started = time.perf_counter()
  configs = pipeline.build_configs(argv + ["offline_data_dir="], inputs.data)
  cache_tool.generate(configs, cache_tool.resolve_top_k(cache_tool.ToolOptions(output_dir=cache_dir), configs))
  seconds = time.perf_counter() - started
  write_json(stamp, {"key": key, "seconds": seconds})
  logging.info("Teacher top-k cache for seed %d: %s (%.0fs)", seed, cache_dir, seconds)
  return key, seconds


def write_json(path: str, value) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
