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

"""The study's runs: reference scores, every arm trained and scored (or reused when unchanged), then the outputs."""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time

from absl import logging

from maxtext_distill_plugin.demo import pipeline
from maxtext_distill_plugin.demo import plan as demo_plan_lib
from maxtext_distill_plugin.demo import scoring
from tools.study import arms as arms_lib
from tools.study import inputs as inputs_lib
from tools.study import plots
from tools.study import report
from tools.study import upstream as upstream_lib


def read_curve(metrics_file: str) -> dict[str, list]:
  """The trainer's held-out evals (CE, KL at T=1) and training CE against the step, from a run's JSON lines."""
  names = {"eval_ce": "eval/hard_loss", "eval_kl_t1": "eval/kl_div_T1", "train_ce": "distill/hard_loss"}
  curve = {key: [] for key in ("eval_step", "train_step", *names)}
  with open(metrics_file, encoding="utf-8") as f:
    for record in map(json.loads, filter(str.strip, f)):
      kind = "eval" if "eval/hard_loss" in record else "train"
      curve[f"{kind}_step"].append(record["step"])
      for key, name in names.items():
        if key.startswith(kind) and name in record:  # offline evals have no teacher, hence no KL
          curve[key].append(record[name])
  return curve


def train_and_score(
    arm: arms_lib.Arm,
    seed: int,
    inputs: inputs_lib.Inputs,
    held_out: scoring.HeldOut,
    runs_dir: str,
    plan: inputs_lib.StudyPlan,
) -> dict:
  """Trains one arm from the pruned student (or reuses a finished identical run) and scores its checkpoint."""
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

  run_dir = os.path.join(runs_dir, f"{arm.name}-seed{seed}")
  argv = inputs_lib.arm_argv(arm, inputs, run_dir, plan, seed, inputs.pruned_items)
  cache_key, cache_seconds = inputs_lib.ensure_cache(inputs, plan, seed) if arm.offline else ("", 0.0)
  key = inputs_lib.sha(json.dumps([argv, inputs.fingerprint, cache_key]))
  done = demo_plan_lib.read_json(os.path.join(run_dir, "result.json"))
  if done and done.get("key") == key:
    logging.info("Reusing %s (finished earlier)", run_dir)
    return done
  shutil.rmtree(run_dir, ignore_errors=True)
  os.makedirs(run_dir)
  logging.info("Training %s, seed %d: %s", arm.name, seed, " ".join(arm.overrides) or arm.yaml)
  started = time.perf_counter()
  trained = trainer.train(pipeline.build_configs(argv, inputs.data))
  seconds = time.perf_counter() - started
  items = os.path.join(trained.checkpoint_dir, str(trained.last_step), "items")
  final = pipeline.build_configs(inputs_lib.arm_argv(arm, inputs, run_dir, plan, seed, items), inputs.data)
  result = {
      "key": key,
      "arm": arm.name,
      "seed": seed,
      "steps": trained.last_step + 1,
      "train_seconds": seconds,
      "cache_seconds": cache_seconds,
      "scores": held_out.score(final.student),
      "curve": read_curve(os.path.join(run_dir, "metrics.jsonl")),
      "checkpoint": items,
      "argv": argv[1:],
  }
  inputs_lib.write_json(os.path.join(run_dir, "result.json"), result)
  logging.info("%s seed %d: held-out CE %.4f (%.0fs)", arm.name, seed, result["scores"]["ce"], seconds)
  return result


def run_arms(
    inputs: inputs_lib.Inputs, held_out: scoring.HeldOut, study_dir: str, plan: inputs_lib.StudyPlan, started: float
) -> list[dict]:
  """``plan.arms`` for every seed, then the ablations (first seed) while the projected time fits the budget."""
  runs_dir = os.path.join(study_dir, "runs")
  main = tuple(arms_lib.BY_NAME[name] for name in plan.arms)
  results = [train_and_score(arm, seed, inputs, held_out, runs_dir, plan) for seed in plan.seeds for arm in main]
  per_run = max(r["train_seconds"] for r in results)
  for arm in arms_lib.ABLATIONS[: plan.ablations]:
    elapsed = time.perf_counter() - started
    if elapsed + per_run > plan.budget_s:
      logging.warning("Budget: %.0fs of %.0fs used; skipping %s and later ablations.", elapsed, plan.budget_s, arm.name)
      break
    results.append(train_and_score(arm, plan.seeds[0], inputs, held_out, runs_dir, plan))
  return results


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str):
  start = time.perf_counter()
  yield
  seconds[name] = time.perf_counter() - start


def score_references(
    inputs: inputs_lib.Inputs, study_dir: str, plan: inputs_lib.StudyPlan
) -> tuple[scoring.HeldOut, dict]:
  """The held-out batches, and the scores of the teacher, the pruned student and the unigram floor."""
  probe_dir = os.path.join(study_dir, "probe")
  probe = pipeline.build_configs(
      inputs_lib.arm_argv(arms_lib.RECIPE, inputs, probe_dir, plan, 0, inputs.pruned_items), inputs.data
  )
  held_out = scoring.HeldOut(probe, plan.demo_plan.eval_batches)
  reference = {"teacher": held_out.teacher_scores(), "pruned": held_out.score(probe.student)}
  unigram = scoring.unigram_cross_entropy(inputs.data.train_pattern, inputs.data.vocab_size, held_out.batches)
  reference["unigram"] = {"ce": unigram, "perplexity": math.exp(unigram)}
  logging.info("Held-out CE: teacher %.4f, pruned %.4f", reference["teacher"]["ce"], reference["pruned"]["ce"])
  return held_out, reference


def run_study(root: str, plan: inputs_lib.StudyPlan, *, upstream: bool, plots_dir: str | None) -> dict:
  """Every stage; writes ``<root>/study/results.json`` and ``results.md`` and returns the results."""
  started, seconds = time.perf_counter(), {}
  study_dir = os.path.join(root, "study")
  os.makedirs(study_dir, exist_ok=True)
  with _timed(seconds, "data, teacher, pruning"):
    inputs = inputs_lib.prepare_inputs(root, study_dir, plan)
  with _timed(seconds, "reference scores"):
    held_out, reference = score_references(inputs, study_dir, plan)
  with _timed(seconds, "training and scoring"):
    runs = run_arms(inputs, held_out, study_dir, plan, started)
  with _timed(seconds, "upstream attempt"):
    upstream_outcome = upstream_lib.attempt_upstream(inputs, study_dir, plan) if upstream else None
  results = {
      "plan": {**dataclasses.asdict(plan), "kept_layers": list(demo_plan_lib.KEEP_LAYERS)},
      "eval_tokens": held_out.tokens,
      "eval_files": inputs.data.stats["eval_files"],
      "reference": reference,
      "runs": runs,
      "arms": report.summarize(runs, reference),
      "paired_ce_differences": report.paired_differences(runs),
      "upstream": upstream_outcome,
      "stage_seconds": seconds,
      "seconds": time.perf_counter() - started,
  }
  return write_outputs(results, study_dir, plots_dir)


def write_outputs(results: dict, study_dir: str, plots_dir: str | None) -> dict:
  """The plots, ``results.json`` and ``results.md``."""
  results["plots"] = plots.plot_curves(results, plots_dir or study_dir)
  inputs_lib.write_json(os.path.join(study_dir, "results.json"), results)
  with open(os.path.join(study_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write(report.markdown_report(results) + "\n")
  return results


def replot(study_dir: str, plots_dir: str | None) -> dict:
  """Redraws the outputs of a finished study (no training)."""
  results = demo_plan_lib.read_json(os.path.join(study_dir, "results.json"))
  if results is None:
    raise FileNotFoundError(f"no results.json in {study_dir}: run the study first.")
  return write_outputs(results, study_dir, plots_dir)
