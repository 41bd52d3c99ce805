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

"""The on-policy arms (``--arms onpolicy_off,onpolicy_1,onpolicy_0.5,seqkd``): the demo's pruned student trained on
function chats from the stdlib training files (:mod:`function_data`), scored on the held-out files' chats
(:mod:`on_policy_scoring`), with the same optimizer steps, batch, data order and divergence in every arm.

Writes ``<root>/study/onpolicy/results.json`` and ``results.md``, and ``onpolicy_study.png`` in the plots directory.
"""

import json
import os
import shutil
import statistics
import time

from absl import logging

from maxtext_distill_plugin.configuration import config as config_lib
from maxtext_distill_plugin.demo import plan as demo_plan_lib
from tools.study import arms as arms_lib
from tools.study import common
from tools.study import function_data
from tools.study import inputs as inputs_lib
from tools.study import on_policy_scoring

NEW_TOKENS = 48  # completion budget; prompts get max_target_length - NEW_TOKENS = 80 positions
SCORES = ("teacher_nll", "ce", "first_line_match")
LABELS = {"teacher_nll": "teacher NLL of greedy samples", "ce": "held-out CE", "first_line_match": "first-line EM"}


def arm_argv(arm, inputs, fdata, run_dir: str, plan, seed: int, student_items: str) -> list[str]:
  """``config.build`` arguments of one on-policy arm and seed (``arm.overrides`` last)."""
  return [
      *common.run_argv(
          arm.yaml, run_dir, steps=plan.steps, seed=seed, student_items=student_items, teacher_items=inputs.teacher_items
      ),
      "eval_interval=-1",  # scored afterwards, every arm by the same code on the same batches
      f"log_period={max(1, plan.steps // 10)}",
      f"init_weights_seed={seed}",  # the on-policy draws and samples follow from it (the loaded weights do not)
      *fdata.maxtext_args(),
      *arms_lib.ON_POLICY_COMMON,
      *([f"distill_sample_max_new_tokens={NEW_TOKENS}"] if arm.samples else []),
      *arm.overrides,
  ]


def read_train_curve(metrics_file: str) -> dict[str, list]:
  curve = {"step": [], "soft_loss": []}
  with open(metrics_file, encoding="utf-8") as f:
    for record in map(json.loads, filter(str.strip, f)):
      if "distill/soft_loss" in record:
        curve["step"].append(record["step"])
        curve["soft_loss"].append(record["distill/soft_loss"])
  return curve


def _configs(argv):
  return config_lib.build(argv)


def train_and_score(arm, seed, inputs, fdata, scorer, runs_dir, plan) -> dict:
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

  run_dir = os.path.join(runs_dir, f"{arm.name}-seed{seed}")
  shutil.rmtree(run_dir, ignore_errors=True)
  os.makedirs(run_dir)
  argv = arm_argv(arm, inputs, fdata, run_dir, plan, seed, inputs.pruned_items)
  logging.info("Training %s, seed %d: %s", arm.name, seed, " ".join(arm.overrides))
  started = time.perf_counter()
  trained = trainer.train(_configs(argv))
  seconds = time.perf_counter() - started
  items = os.path.join(trained.checkpoint_dir, str(trained.last_step), "items")
  final = _configs(arm_argv(arm, inputs, fdata, run_dir, plan, seed, items))
  scores = scorer.score(final.student)
  logging.info("%s seed %d: %s (%.0fs)", arm.name, seed, scores, seconds)
  return {
      "arm": arm.name,
      "seed": seed,
      "steps": trained.last_step + 1,
      "train_seconds": seconds,
      "scores": scores,
      "curve": read_train_curve(os.path.join(run_dir, "metrics.jsonl")),
      "argv": argv[1:],
  }


def summarize(runs: list[dict]) -> dict:
  """Per arm: mean and sample standard deviation (0 for one seed) of every score over its seeds."""
  out = {}
  for name in dict.fromkeys(r["arm"] for r in runs):
    mine = [r["scores"] for r in runs if r["arm"] == name]
    out[name] = {
        k: {
            "mean": statistics.fmean(s[k] for s in mine),
            "std": statistics.stdev(s[k] for s in mine) if len(mine) > 1 else 0.0,
        }
        for k in (*SCORES, "completion_length")
    }
    out[name]["seeds"] = len(mine)
  return out


def markdown_report(results: dict) -> str:
  lines = [
      (
          f"Held-out: {results['eval_prompts']} prompts from {results['data']['eval_chats']} chats of the held-out files;"
          f" {results['plan']['steps']} steps per run, seeds {results['plan']['seeds']}."
      ),
      "",
      "| model | seeds | teacher NLL of greedy samples | held-out CE | first-line EM | completion tokens |",
      "|---|---|---|---|---|---|",
  ]

  def cell(v):
    return f"{v['mean']:.4f} ± {v['std']:.4f}" if isinstance(v, dict) else f"{v:.4f}"

  for name, scores in (("teacher", results["reference"]["teacher"]), ("pruned student", results["reference"]["pruned"])):
    lines.append(f"| {name} | - | " + " | ".join(cell(scores[k]) for k in (*SCORES, "completion_length")) + " |")
  for name, summary in results["arms"].items():
    label = arms_lib.BY_NAME[name].label
    lines.append(
        f"| {label} | {summary['seeds']} | " + " | ".join(cell(summary[k]) for k in (*SCORES, "completion_length")) + " |"
    )
  return "\n".join(lines)


def plot(results: dict, plots_dir: str) -> list[str]:
  """One PNG: per score, each arm's seeds (dots) and mean (bar), with the teacher and pruned student as lines."""
  plt = common.pyplot()
  if plt is None:
    return []
  fig, axes = plt.subplots(1, len(SCORES), figsize=(4.2 * len(SCORES), 3.6))
  for ax, key in zip(axes, SCORES):
    common.seed_bars(ax, results, lambda scores, key=key: scores[key], arm_mean=lambda arm, key=key: arm[key]["mean"])
    ax.set_title(LABELS[key])
  axes[0].legend(fontsize=8)
  return [common.save_figure(plt, fig, plots_dir, "onpolicy_study.png")]


def run(root: str, plan, plots_dir: str | None) -> dict:
  """Data, teacher and pruned student (the demo's), function chats, references, every arm and seed, outputs."""
  started = time.perf_counter()
  study_dir = os.path.join(root, "study")
  out_dir = os.path.join(study_dir, "onpolicy")
  os.makedirs(out_dir, exist_ok=True)
  inputs = inputs_lib.prepare_inputs(root, study_dir, plan)
  max_len = demo_plan_lib.model_max_length()
  fdata = function_data.prepare(
      os.path.join(out_dir, "functions"),
      inputs.data,
      prompt_tokens=max_len - NEW_TOKENS,
      completion_tokens=NEW_TOKENS,
      max_files=plan.demo_plan.max_files,
  )
  logging.info("Function chats: %s", fdata.stats)
  chosen = [arms_lib.BY_NAME[name] for name in plan.arms]
  probe_arm = next((a for a in chosen if a.samples), arms_lib.ON_POLICY_1)
  probe_argv = arm_argv(probe_arm, inputs, fdata, os.path.join(out_dir, "probe"), plan, 0, inputs.pruned_items)
  # MaxText makes an eval iterator only when evals are on; the scorer reads its first batches.
  probe = _configs([a if a != "eval_interval=-1" else "eval_interval=1" for a in probe_argv])
  scorer = on_policy_scoring.FunctionScorer(probe, plan.demo_plan.eval_batches, inputs.data.tokenizer_path)
  reference = {"teacher": scorer.score(None), "pruned": scorer.score(probe.student)}
  logging.info("References: %s", reference)
  runs_dir = os.path.join(out_dir, "runs")
  runs = [train_and_score(a, s, inputs, fdata, scorer, runs_dir, plan) for s in plan.seeds for a in chosen]
  results = {
      "plan": {"steps": plan.steps, "seeds": list(plan.seeds), "arms": list(plan.arms), "new_tokens": NEW_TOKENS},
      "data": fdata.stats,
      "eval_prompts": reference["teacher"]["prompts"],
      "eval_tokens": scorer.tokens,
      "reference": reference,
      "runs": runs,
      "arms": summarize(runs),
      "seconds": time.perf_counter() - started,
  }
  results["plots"] = plot(results, plots_dir or out_dir)
  inputs_lib.write_json(os.path.join(out_dir, "results.json"), results)
  report = markdown_report(results)
  with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write(report + "\n")
  logging.info("On-policy study: %.0fs", results["seconds"])
  return results
