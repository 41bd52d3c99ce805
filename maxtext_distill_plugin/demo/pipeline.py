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

"""The demo's stages, in order: data, teacher, pruning, scores before, distillation, scores after.

:func:`run` runs them all and writes ``results.json``; :func:`build_configs` and :func:`recipe_argv` are the
demo's ``config.build`` arguments, which the pruning-recovery study builds on.
"""

import json
import os
import shutil


from maxtext_distill_plugin.demo import data as demo_data
from maxtext_distill_plugin.demo import plan as plan_lib
from maxtext_distill_plugin.demo import scoring
from maxtext_distill_plugin.demo import teacher
from maxtext_distill_plugin.loss import metric_names


def recipe_argv(paths: plan_lib.Paths, data, teacher_items: str, student_items: str, plan: plan_lib.Plan) -> list[str]:
  """``config.build`` arguments of the distillation (the student loads ``student_items``)."""
  return [
      "demo",
      plan_lib.yaml_path(plan_lib.RECIPE_YAML),
      "run_name=student",
      f"base_output_directory={paths.root}",
      f"steps={plan.distill_steps}",
      f"eval_steps={plan.eval_batches}",
      f"eval_interval={max(1, min(100, plan.distill_steps))}",
      f"log_period={max(1, min(50, plan.distill_steps))}",
      f"student_overrides.load_parameters_path={student_items}",
      f"teacher_overrides.load_parameters_path={teacher_items}",
      *data.maxtext_args(),
  ]


def build_configs(argv: list[str], data: demo_data.DemoData):
  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

  configs = config.build(argv)
  for label, cfg in (("student", configs.student), ("teacher", configs.teacher)):
    if cfg is not None and cfg.vocab_size != data.vocab_size:  # offline runs have no teacher config
      raise ValueError(f"{label} vocab_size={cfg.vocab_size} but the tokenizer has {data.vocab_size} pieces.")
  return configs


def _with_student(argv: list[str], items: str) -> list[str]:
  key = "student_overrides.load_parameters_path="
  return [a for a in argv if not a.startswith(key)] + [key + items]


def prune_student(paths: plan_lib.Paths, teacher_items: str):
  """Writes the pruned student checkpoint afresh; returns the :class:`pruning.PruneReport`."""
  from maxtext_distill_plugin.student import pruning  # pylint: disable=import-outside-toplevel

  shutil.rmtree(os.path.dirname(os.path.dirname(paths.pruned_items)), ignore_errors=True)
  return pruning.prune_layers(teacher_items, paths.pruned_items, list(plan_lib.KEEP_LAYERS))


def evaluate_before(configs, data: demo_data.DemoData, batches: list[dict]) -> dict[str, float]:
  """Held-out CE of the unigram floor, the teacher and the pruned student."""
  ce = {
      "unigram": scoring.unigram_cross_entropy(data.train_pattern, data.vocab_size, batches),
      "teacher": scoring.held_out_cross_entropy(configs.teacher, batches),
      "pruned_student": scoring.held_out_cross_entropy(configs.student, batches),
  }
  print("  held-out CE: " + ", ".join(f"{k} {v:.3f}" for k, v in ce.items()), flush=True)
  return ce


def distill(paths: plan_lib.Paths, configs):
  """The online distillation run (a fresh one each time); returns the trainer's ``TrainResult``."""
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

  shutil.rmtree(paths.student_run, ignore_errors=True)
  return trainer.train(configs)


def evaluate_distilled(argv: list[str], data: demo_data.DemoData, trained, batches: list[dict]) -> tuple[str, float]:
  """Loads the distilled student's last checkpoint as MaxText would; returns ``(items dir, held-out CE)``."""
  student_items = plan_lib.latest_items(trained.checkpoint_dir)
  if student_items is None:
    raise RuntimeError(f"the distillation wrote no checkpoint under {trained.checkpoint_dir}.")
  configs = build_configs(_with_student(argv, student_items), data)
  return student_items, scoring.held_out_cross_entropy(configs.student, batches)


def run(output_dir: str, plan: plan_lib.Plan) -> dict:
  """Runs every stage; returns (and writes to ``results.json``) the numbers and paths."""
  paths = plan_lib.Paths(os.path.abspath(output_dir))
  os.makedirs(paths.root, exist_ok=True)
  timer = plan_lib.StageTimer()
  with timer.stage("data"):
    data = demo_data.prepare(paths.data, chunk_tokens=plan_lib.model_max_length(), max_files=plan.max_files)
  with timer.stage("teacher"):
    teacher_items, reused = teacher.ensure_teacher(paths, data, plan.teacher_steps)
    print(f"  teacher {'reused' if reused else 'pre-trained'}: {teacher_items}", flush=True)
  with timer.stage("prune"):
    report = prune_student(paths, teacher_items)
  with timer.stage("eval before"):
    argv = recipe_argv(paths, data, teacher_items, paths.pruned_items, plan)
    configs = build_configs(argv, data)
    batches = scoring.collect_eval_batches(configs.student, plan.eval_batches)
    ce = evaluate_before(configs, data, batches)
  with timer.stage("distill"):
    trained = distill(paths, configs)
  with timer.stage("eval after"):
    student_items, ce["distilled_student"] = evaluate_distilled(argv, data, trained, batches)
  evals = [h for h in trained.history if metric_names.EVAL_HARD_LOSS in h]
  results = {
      "cross_entropy": ce,
      "eval_files": data.stats["eval_files"],
      "eval_batches": len(batches),
      "eval_tokens": scoring.target_count(batches),
      "teacher_layers": report.source_layers,
      "student_layers": len(report.kept_layers),
      "kept_layers": list(report.kept_layers),
      "distill_steps": trained.last_step + 1,
      "trainer_eval": evals[-1] if evals else {},
      "seconds": timer.seconds,
      "paths": {
          "root": paths.root,
          "teacher": teacher_items,
          "pruned": paths.pruned_items,
          "student": student_items,
          "tensorboard": trained.tensorboard_dir,
          "teacher_tensorboard": os.path.join(paths.teacher_run, "tensorboard"),
          "tokenizer": data.tokenizer_path,
      },
  }
  with open(paths.results, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  return results
