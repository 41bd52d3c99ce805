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

"""Upstream MaxText's own ``train_distill`` on recipe (b), for the record: what happens when it runs at all."""

import os
import shutil
import subprocess
import sys
import time

from absl import logging

from maxtext_distill_plugin.configuration import config as config_lib
from tools.study import arms as arms_lib
from tools.study import inputs as inputs_lib

# Keys of this plugin that upstream's config would refuse; the YAML given to upstream leaves them out.
_PLUGIN_ONLY_KEYS = ("distill_teacher_layer_indices",)


def _flattened_yaml(name: str) -> dict:
  """``name`` merged over its chain of shipped base configs, down to MaxText's own ``base.yml``."""
  import yaml  # pylint: disable=import-outside-toplevel

  with open(config_lib.resolve_yaml(name), encoding="utf-8") as f:
    body = yaml.safe_load(f)
  base = body.get("base_config")
  if not base or base == "base.yml":
    return body
  merged = _flattened_yaml(base)
  for key, value in body.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      value = {**merged[key], **value}
    merged[key] = value
  merged["base_config"] = "base.yml"
  return merged


def _upstream_yaml(inputs: inputs_lib.Inputs, path: str) -> None:
  """Recipe (b) as one self-contained YAML, with the data and checkpoint paths inside: upstream builds its
  teacher from the YAML and ``teacher_overrides`` only, so CLI data keys would not reach it."""
  import yaml  # pylint: disable=import-outside-toplevel

  data = inputs.data
  body = {k: v for k, v in _flattened_yaml(arms_lib.LOGIT_KD_YAML).items() if k not in _PLUGIN_ONLY_KEYS}
  body.update(
      grain_train_files=data.train_pattern,
      grain_eval_files=data.eval_pattern,
      tokenizer_path=data.tokenizer_path,
  )
  body["student_overrides"] = {**body.get("student_overrides", {}), "load_parameters_path": inputs.pruned_items}
  body["teacher_overrides"] = {**body.get("teacher_overrides", {}), "load_parameters_path": inputs.teacher_items}
  with open(path, "w", encoding="utf-8") as f:
    yaml.safe_dump(body, f, sort_keys=False)


def _last_error(log_path: str) -> str:
  with open(log_path, encoding="utf-8", errors="replace") as f:
    lines = [line.strip() for line in f if line.strip()]
  errors = [line for line in lines if "Error" in line.split(":")[0] or line.startswith("Error")]
  return errors[-1] if errors else (lines[-1] if lines else "")


def attempt_upstream(inputs: inputs_lib.Inputs, study_dir: str, plan: inputs_lib.StudyPlan) -> dict:
  """Runs MaxText's own ``train_distill`` (``MAXTEXT_DISTILL_USE_UPSTREAM=1``) on recipe (b); reports what happened.

  Only the outcome is recorded (status, exit code, last error line, log): on MaxText 0.2.5 with google-tunix 0.1.7
  it stops before the first step, so there is no checkpoint to score.
  """
  run_dir = os.path.join(study_dir, "upstream")
  shutil.rmtree(run_dir, ignore_errors=True)
  os.makedirs(run_dir)
  yaml_path, log_path = os.path.join(run_dir, "upstream.yml"), os.path.join(run_dir, "upstream.log")
  _upstream_yaml(inputs, yaml_path)
  cmd = [sys.executable, "-m", "maxtext.trainers.post_train.distillation.train_distill", yaml_path]
  cmd += ["run_name=run", f"base_output_directory={run_dir}", f"steps={plan.steps}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "MAXTEXT_DISTILL_USE_UPSTREAM": "1"}
  started = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    try:
      run = subprocess.run(
          cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=plan.upstream_timeout_s, check=False
      )
      code = run.returncode
    except subprocess.TimeoutExpired:
      code = None
  outcome = {"command": "MAXTEXT_DISTILL_USE_UPSTREAM=1 " + " ".join(cmd), "log": log_path}
  outcome.update(seconds=time.perf_counter() - started, exit_code=code, error=_last_error(log_path))
  outcome["status"] = "ran" if code == 0 else ("timed out" if code is None else "failed")
  logging.info("Upstream train_distill: %s (%s)", outcome["status"], outcome["error"])
  return outcome
