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

"""The table the demo prints at the end, with the locations of everything it wrote."""

import math

from maxtext_distill_plugin.loss import metric_names

_EVAL_HARD_LOSS = metric_names.eval_name(metric_names.HARD_LOSS)
_EVAL_TEACHER_LOSS = metric_names.eval_name(metric_names.TEACHER_LOSS)


def _row(name: str, layers, ce: float) -> str:
  return f"  {name:<34} {str(layers):>6} {ce:>10.3f} {math.exp(min(ce, 80.0)):>11.1f}"


def format_report(results: dict) -> str:
  """The table and the locations, as printed at the end."""
  ce = results["cross_entropy"]
  gap = ce["pruned_student"] - ce["teacher"]
  recovered = (ce["pruned_student"] - ce["distilled_student"]) / gap if gap > 0 else float("nan")
  lines = [
      "",
      (
          f"Held-out split: {results['eval_files']} standard-library files not used for training;"
          f" {results['eval_tokens']} target tokens ({results['eval_batches']} batches of MaxText's eval iterator)."
      ),
      f"  {'model':<34} {'layers':>6} {'CE (nats)':>10} {'perplexity':>11}",
      _row("unigram (training-split counts)", "-", ce["unigram"]),
      _row("teacher (MaxText pre-training)", results["teacher_layers"], ce["teacher"]),
      _row("pruned student, before", results["student_layers"], ce["pruned_student"]),
      _row("student after distillation", results["student_layers"], ce["distilled_student"]),
      (
          f"Distillation closed {100 * recovered:.0f}% of the teacher-student gap in {results['distill_steps']} steps"
          " (the trainer's own eval of the same batches: student CE"
          f" {results['trainer_eval'].get(_EVAL_HARD_LOSS, float('nan')):.3f}, teacher CE"
          f" {results['trainer_eval'].get(_EVAL_TEACHER_LOSS, float('nan')):.3f})."
      ),
      "",
      f"Teacher checkpoint:          {results['paths']['teacher']}",
      f"Pruned student checkpoint:   {results['paths']['pruned']}",
      f"Distilled student:           {results['paths']['student']}",
      f"TensorBoard (both runs):     tensorboard --logdir {results['paths']['root']}",
      f"  distillation logs:         {results['paths']['tensorboard']}",
      f"  teacher pre-training logs: {results['paths']['teacher_tensorboard']}",
      f"Tokenizer:                   {results['paths']['tokenizer']}",
      "Stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in results["seconds"].items()),
  ]
  return "\n".join(lines)
