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

"""Aggregates (sum, count) metrics over a logging window; writes TensorBoard and console lines.

Device arrays are kept as they come from the step and summed lazily, so the
training loop never blocks on the host except at a log step. A window mean is
``sum(sums) / sum(counts)``, the exact token mean whatever each step held.

Run constants go with every training record: the per-device TFLOPs of one
optimizer step (MaxText's own calculator; each teacher's forward is a third of
its training count, as upstream accounts it) with their per-second rates, and
the student's trainable and total parameter counts.
"""

import json
import math
import os
import time

from absl import logging
import jax

from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import reductions

# Re-exported: tools and tests read these names from here.
TFLOPS = metric_names.TFLOPS
TFLOPS_STUDENT = metric_names.TFLOPS_STUDENT
TFLOPS_TEACHER = metric_names.TFLOPS_TEACHER
TFLOPS_PER_SEC = metric_names.TFLOPS_PER_SEC
TFLOPS_PER_SEC_STUDENT = metric_names.TFLOPS_PER_SEC_STUDENT
TFLOPS_PER_SEC_TEACHER = metric_names.TFLOPS_PER_SEC_TEACHER
PARAMS_TRAINABLE = metric_names.PARAMS_TRAINABLE
PARAMS_TOTAL = metric_names.PARAMS_TOTAL
# On-policy metrics of the steps that sampled (on_policy.py)
_SAMPLED_ONLY = metric_names.SAMPLED_ONLY
# Metrics some steps leave as (0, 0): the on-policy samples, and the online diagnostics (step.StepOptions).
_SOMETIMES = _SAMPLED_ONLY + metric_names.ONLINE_DIAGNOSTICS
_PPL_CE_CAP = 80.0  # exp(80) is about 5.5e34: a finite perplexity for any CE a run can log


class RunConstants:
  """Per-step per-device TFLOPs and the student's parameter counts, fixed for a run."""

  def __init__(self, tflops_student: float, tflops_teacher: float, trainable_params: int, total_params: int):
    self.tflops_student = float(tflops_student)
    self.tflops_teacher = float(tflops_teacher)
    self.trainable_params = int(trainable_params)
    self.total_params = int(total_params)

  @classmethod
  def for_run(cls, student_config, teacher_configs, counts, shares=None) -> "RunConstants":
    """From MaxText's calculator; ``teacher_configs`` the configs of every teacher that runs
    (:func:`running_teachers`, empty offline), ``shares`` their row shares (:func:`teacher_row_shares`; None: all
    rows); ``counts`` from :func:`student_init.apply_at_start`."""
    student, teacher = tflops_per_step(student_config, teacher_configs, shares)
    return cls(student, teacher, counts[0], counts[1])

  def metrics(self, step_time_s: float) -> dict[str, float]:
    total = self.tflops_student + self.tflops_teacher
    per_sec = 1.0 / max(step_time_s, 1e-9)
    return {
        TFLOPS: total,
        TFLOPS_STUDENT: self.tflops_student,
        TFLOPS_TEACHER: self.tflops_teacher,
        TFLOPS_PER_SEC: total * per_sec,
        TFLOPS_PER_SEC_STUDENT: self.tflops_student * per_sec,
        TFLOPS_PER_SEC_TEACHER: self.tflops_teacher * per_sec,
        PARAMS_TRAINABLE: float(self.trainable_params),
        PARAMS_TOTAL: float(self.total_params),
    }


def running_teachers(configs) -> tuple:
  """The MaxText configs of the teachers whose forward runs every step: each of ``teachers:``, the one teacher, or none
  offline (the cache stands in for the teacher)."""
  if configs.teachers:
    return tuple(member for _, member in configs.teachers)
  return () if configs.teacher is None else (configs.teacher,)


def teacher_row_shares(configs) -> tuple[float, ...]:
  """The fraction of each micro-batch's rows that each of :func:`running_teachers` runs its forward on: routed
  (``distill_teacher_mixture=route``), a teacher scores only its own block of rows; otherwise every row."""
  teachers = running_teachers(configs)
  rows = [stream.rows for stream in configs.routes]
  if not rows or sum(rows) == 0:
    return tuple(1.0 for _ in teachers)
  return tuple(r / sum(rows) for r in rows)


def tflops_per_step(student_config, teacher_configs, shares=None) -> tuple[float, float]:
  """``(student, teachers)`` per-device TFLOPs of one optimizer step.

  MaxText's ``calculate_tflops_training_per_device`` counts one forward and backward of a
  ``per_device_batch_size`` micro-batch (3x the forward); a step runs ``gradient_accumulation_steps`` of
  them. Each teacher runs forward only, on every micro-batch: a third of its count, times its share of the rows
  (``shares``, from :func:`teacher_row_shares`; all 1 when mixed, each teacher's block when routed), summed.
  """
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  micro_batches = max(int(student_config.gradient_accumulation_steps), 1)
  student, _, _ = maxtext_utils.calculate_tflops_training_per_device(student_config, log=False)
  teacher = 0.0
  shares = tuple(shares) if shares is not None else tuple(1.0 for _ in teacher_configs)
  for teacher_config, share in zip(teacher_configs, shares, strict=True):
    teacher_training, _, _ = maxtext_utils.calculate_tflops_training_per_device(teacher_config, log=False)
    teacher += share * teacher_training / 3.0
  return float(student) * micro_batches, float(teacher) * micro_batches


class MetricsLogger:
  """One per run; only process 0 writes files."""

  def __init__(
      self,
      tensorboard_dir: str | None,
      total_steps: int,
      *,
      metrics_file: str = "",
      enabled: bool = True,
      run_constants: "RunConstants | None" = None,
  ):
    self.total_steps = total_steps
    self.constants = run_constants
    self._metrics_file = metrics_file if enabled and jax.process_index() == 0 else ""
    self._window: list[dict] = []
    self._window_start = time.perf_counter()
    self._run_start = time.perf_counter()
    self._first_logged_step: int | None = None
    self.history: list[dict[str, float]] = []
    self._writer = None
    if enabled and tensorboard_dir and jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

      os.makedirs(tensorboard_dir, exist_ok=True)
      self._writer = SummaryWriter(tensorboard_dir)
      self.tensorboard_dir = tensorboard_dir

  def add(self, metrics: dict) -> None:
    self._window.append(metrics)

  def flush(self, step: int) -> dict[str, float]:
    """Writes the window ending at ``step`` (0-based optimizer step); returns its means."""
    if not self._window:
      return {}
    summed = jax.device_get(self._window[0] if len(self._window) == 1 else _tree_sum(self._window))
    steps_in_window = len(self._window)
    self._window = []
    now = time.perf_counter()
    elapsed, self._window_start = now - self._window_start, now
    # Sampling metrics and diagnostics count only the steps that computed them: a window without one leaves them out,
    # not at 0.
    summed = {k: v for k, v in summed.items() if not (k.startswith(_SOMETIMES) and float(v[1]) == 0.0)}
    means = reductions.means(summed)
    means.update(objective.derived_metrics(means))
    if metric_names.TOTAL_LOSS in means:
      means.update({name: 0.0 for name in metric_names.ZERO_WHEN_ABSENT if name not in means})
    tokens = float(summed[metric_names.TOTAL_LOSS][1]) if metric_names.TOTAL_LOSS in summed else 0.0
    means[metric_names.STEP_TIME] = elapsed / steps_in_window
    means[metric_names.TOKENS_PER_SECOND] = tokens / max(elapsed, 1e-9)
    if metric_names.TEACHER_LOSS in means:
      means[metric_names.TEACHER_PERPLEXITY] = math.exp(min(means[metric_names.TEACHER_LOSS], _PPL_CE_CAP))
    if self.constants is not None:
      means.update(self.constants.metrics(means[metric_names.STEP_TIME]))
    self._write(step, means)
    done = step + 1
    remaining = max(self.total_steps - done, 0)
    eta = remaining * means[metric_names.STEP_TIME]
    logging.info(
        "step %d/%d | total %.4f soft %.4f hard %.4f %s %.4f feat %.4f | alpha %.3f T %.3f beta %.3g |"
        " lr %.2e | %.0f tok/s | eta %s",
        done,
        self.total_steps,
        means.get(metric_names.TOTAL_LOSS, math.nan),
        means.get(metric_names.SOFT_LOSS, math.nan),
        means.get(metric_names.HARD_LOSS, math.nan),
        # Online the teacher's CE is the more telling number; offline (no teacher CE) the cache's coverage.
        "teacher" if metric_names.TEACHER_LOSS in means else "coverage",
        means.get(metric_names.TEACHER_LOSS, means.get(metric_names.TOPK_COVERAGE, math.nan)),
        means.get(metric_names.FEATURE_LOSS, math.nan),
        means.get(metric_names.ALPHA, math.nan),
        means.get(metric_names.TEMPERATURE, math.nan),
        means.get(metric_names.BETA_FEATURE, math.nan),
        means.get("learning_rate", math.nan),
        means[metric_names.TOKENS_PER_SECOND],
        _format_eta(eta),
    )
    return means

  def write_eval(self, step: int, summed: dict) -> dict[str, float]:
    means = reductions.means(jax.device_get(summed))
    if metric_names.EVAL_HARD_LOSS in means:
      means[metric_names.EVAL_STUDENT_PERPLEXITY] = math.exp(min(means[metric_names.EVAL_HARD_LOSS], 80.0))
    self._write(step, means)
    logging.info("eval at step %d: %s", step + 1, " ".join(f"{k}={v:.4f}" for k, v in sorted(means.items())))
    return means

  def _write(self, step: int, means: dict[str, float]) -> None:
    record = {"step": step + 1, **means}
    self.history.append(record)
    if self._metrics_file:
      with open(self._metrics_file, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if self._writer is not None:
      for name, value in means.items():
        self._writer.add_scalar(name, value, step + 1)
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _tree_sum(trees: list[dict]) -> dict:
  return jax.tree.map(lambda *xs: sum(xs[1:], xs[0]), *trees)


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600:d}h{(seconds % 3600) // 60:02d}m{seconds % 60:02d}s"
