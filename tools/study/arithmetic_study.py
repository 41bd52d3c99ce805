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

"""The addition study's runs: every arm and seed trained by the plugin's trainer from the same pruned student,
its checkpoints scored on the held-out problems (greedy exact match, the teacher's NLL of the greedy answers,
held-out CE), and the results written to ``<root>/results.json`` and ``results.md`` and a PNG.

A finished run leaves ``result.json`` beside its checkpoints and is reused while its arguments and inputs are
unchanged, so an interrupted study resumes where it stopped.
"""

import hashlib
import json
import os
import shutil
import time

from absl import logging

from maxtext_distill_plugin.configuration import config as config_lib
from maxtext_distill_plugin.demo import plan as demo_plan_lib
from tools.study import arithmetic_arms
from tools.study import arithmetic_data
from tools.study import arithmetic_inputs
from tools.study import arithmetic_report
from tools.study import common
from tools.study import inputs as inputs_lib
from tools.study import on_policy_scoring


def first_stage_steps(plan) -> int:
  """Optimizer steps a two-stage arm takes from its first arm: through the last checkpoint before the final one
  (MaxText saves at step indices 0, p, 2p, ... with p = ``plan.steps // plan.curve_points``, and at the last step)."""
  return (plan.curve_points - 1) * max(1, plan.steps // plan.curve_points) + 1


def arm_argv(arm, inputs, run_dir: str, plan, seed: int, student_items: str) -> list[str]:
  """``config.build`` arguments of one arm and seed (``arm.overrides`` last)."""
  teacher = inputs.uniform_items if arm.uniform_teacher else inputs.teacher_items
  steps = plan.steps - first_stage_steps(plan) if arm.after else plan.steps
  return [
      *common.run_argv(
          arithmetic_inputs.STUDY_YAML,
          run_dir,
          steps=steps,
          seed=seed,
          student_items=student_items,
          teacher_items=teacher,
      ),
      "eval_interval=-1",  # scored afterwards, every arm by the same code on the same batches
      f"log_period={max(1, steps // 20)}",
      f"checkpoint_period={max(1, plan.steps // plan.curve_points)}",
      f"init_weights_seed={seed}",  # the on-policy draws and samples follow from it (the loaded weights do not)
      *inputs.data.maxtext_args(),
      *arm.overrides,
  ]


def make_scorer(inputs, plan, root: str) -> on_policy_scoring.SampleScorer:
  """The held-out problems (all of them, in MaxText's eval batches) and the real teacher, for every model."""
  argv = arm_argv(arithmetic_arms.ON_POLICY_1, inputs, os.path.join(root, "probe"), plan, 0, inputs.pruned_items)
  eval_rows = config_lib.build(argv).student.global_batch_size_to_train_on
  batches = -(-plan.eval_size // eval_rows)
  # MaxText makes an eval iterator only when evals are on; the scorer reads its first batches.
  probe = config_lib.build(
      [a if a != "eval_interval=-1" else "eval_interval=1" for a in argv] + [f"eval_steps={batches}"]
  )
  return on_policy_scoring.SampleScorer(probe, batches, arithmetic_data.exact_matches, "exact_match")


def read_metrics(metrics_file: str) -> list[dict]:
  with open(metrics_file, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def sampled_steps(metrics: list[dict]) -> float:
  """Steps trained on samples: each logged window's share of sampled steps (``distill/on_policy_step``, a mean
  over the window) times the window's length."""
  total, previous = 0.0, 0
  for record in metrics:
    if "distill/on_policy_step" in record:
      total += record["distill/on_policy_step"] * (record["step"] - previous)
      previous = record["step"]
  return total


def train_and_score(arm, seed: int, inputs, scorer, runs_dir: str, plan, fingerprint: str) -> dict | None:
  """Trains one arm and seed from the pruned student (or reuses the finished run) and scores its checkpoints; None
  when the run has not finished and ``plan.train`` is off."""
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

  run_dir = os.path.join(runs_dir, f"{arm.name}-seed{seed}")
  start_items, offset = inputs.pruned_items, 0
  if arm.after:  # the first stage is the other arm's run of this seed (trained here if it has not been)
    first = train_and_score(arithmetic_arms.BY_NAME[arm.after], seed, inputs, scorer, runs_dir, plan, fingerprint)
    if first is None:
      return None
    offset = first_stage_steps(plan)
    start_items = os.path.join(runs_dir, f"{arm.after}-seed{seed}", "checkpoints", str(offset - 1), "items")
    fingerprint = json.dumps([fingerprint, first["key"]])
  argv = arm_argv(arm, inputs, run_dir, plan, seed, start_items)
  key = hashlib.sha256(json.dumps([argv, fingerprint]).encode()).hexdigest()[:16]
  done = demo_plan_lib.read_json(os.path.join(run_dir, "result.json"))
  if done and done.get("key") == key:
    logging.info("Reusing %s (finished earlier)", run_dir)
    return {**done, "sampled_steps": sampled_steps(read_metrics(os.path.join(run_dir, "metrics.jsonl")))}
  if not plan.train:
    logging.warning("No finished run in %s: left out of the table (--report-only).", run_dir)
    return None
  shutil.rmtree(run_dir, ignore_errors=True)
  os.makedirs(run_dir)
  logging.info("Training %s, seed %d: %s", arm.name, seed, " ".join(arm.overrides))
  started = time.perf_counter()
  trained = trainer.train(config_lib.build(argv))
  seconds = time.perf_counter() - started
  checkpoints = os.path.join(run_dir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  curve = {"step": [], "exact_match": [], "teacher_nll": [], "ce": []}
  scores = {}
  for step in steps:
    items = os.path.join(checkpoints, str(step), "items")
    scores = scorer.score(config_lib.build(arm_argv(arm, inputs, run_dir, plan, seed, items)).student)
    for name, values in curve.items():
      values.append(offset + step + 1 if name == "step" else scores[name])
  metrics = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
  result = {
      "key": key,
      "arm": arm.name,
      "seed": seed,
      "steps": offset + trained.last_step + 1,
      "train_seconds": seconds,
      "scores": scores,
      "curve": curve,
      "sampled_steps": sampled_steps(metrics),
      "argv": argv[1:],
  }
  inputs_lib.write_json(os.path.join(run_dir, "result.json"), result)
  logging.info("%s seed %d: %s (%.0fs)", arm.name, seed, scores, seconds)
  return result


def run(root: str, plan, plots_dir: str | None) -> dict:
  """Inputs, reference scores, every arm and seed, then ``results.json``, ``results.md`` and the PNG."""
  started = time.perf_counter()
  root = os.path.abspath(root)
  os.makedirs(root, exist_ok=True)
  inputs = arithmetic_inputs.prepare(root, plan)
  fingerprint = json.dumps(
      [inputs.data.stats, demo_plan_lib.read_json(os.path.join(root, "teacher", "study-stamp.json"))]
  )
  scorer = make_scorer(inputs, plan, root)
  reference = {"teacher": scorer.score(None)}
  reference["pruned"] = scorer.score(scorer.configs.student)
  logging.info("References: %s", reference)
  chosen = [arithmetic_arms.BY_NAME[name] for name in plan.arms]
  runs_dir = os.path.join(root, "runs")
  runs = [train_and_score(a, s, inputs, scorer, runs_dir, plan, fingerprint) for s in plan.seeds for a in chosen]
  runs = [r for r in runs if r is not None]
  results = {
      "plan": {
          "digits": plan.digits,
          "train_chats": inputs.data.stats["train_chats"],
          "eval_chats": inputs.data.stats["eval_chats"],
          "teacher_steps": plan.teacher_steps,
          "steps": plan.steps,
          "seeds": list(plan.seeds),
          "arms": list(plan.arms),
          "batch": scorer.configs.student.global_batch_size_to_train_on,
          "max_target_length": scorer.configs.student.max_target_length,
          "new_tokens": scorer.configs.settings.distill_sample_max_new_tokens,
          "kept_layers": list(arithmetic_inputs.KEEP_LAYERS),
      },
      "teacher_seconds": inputs.teacher_seconds,
      "eval_prompts": reference["teacher"]["prompts"],
      "reference": reference,
      "runs": runs,
      "arms": arithmetic_report.summarize(runs, reference),
      "seconds": time.perf_counter() - started,
  }
  results["plots"] = arithmetic_report.plot(results, plots_dir or root)
  inputs_lib.write_json(os.path.join(root, "results.json"), results)
  with open(os.path.join(root, "results.md"), "w", encoding="utf-8") as f:
    f.write(arithmetic_report.markdown_report(results) + "\n")
  logging.info("Addition study: %.0fs", results["seconds"])
  return results
