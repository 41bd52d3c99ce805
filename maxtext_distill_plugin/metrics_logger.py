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
"""

import json
import math
import os
import time

from absl import logging
import jax

from maxtext_distill_plugin import objective
from maxtext_distill_plugin import reductions


class MetricsLogger:
  """One per run; only process 0 writes files."""

  def __init__(self, tensorboard_dir: str | None, total_steps: int, *, metrics_file: str = "", enabled: bool = True):
    self.total_steps = total_steps
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
    means = reductions.means(summed)
    means.update(objective.derived_metrics(means))
    tokens = float(summed["distill/total_loss"][1]) if "distill/total_loss" in summed else 0.0
    means["perf/step_time_s"] = elapsed / steps_in_window
    means["perf/tokens_per_s"] = tokens / max(elapsed, 1e-9)
    self._write(step, means)
    done = step + 1
    remaining = max(self.total_steps - done, 0)
    eta = remaining * means["perf/step_time_s"]
    logging.info(
        "step %d/%d | total %.4f soft %.4f hard %.4f %s %.4f feat %.4f | alpha %.3f T %.3f beta %.3g |"
        " lr %.2e | %.0f tok/s | eta %s",
        done,
        self.total_steps,
        means.get("distill/total_loss", math.nan),
        means.get("distill/soft_loss", math.nan),
        means.get("distill/hard_loss", math.nan),
        "coverage" if "distill/topk_coverage" in means else "teacher",
        means.get("distill/topk_coverage", means.get("distill/teacher_loss", math.nan)),
        means.get("distill/out_proj_feature_loss", math.nan),
        means.get("distill/alpha", math.nan),
        means.get("distill/temperature", math.nan),
        means.get("distill/beta_feature", math.nan),
        means.get("learning_rate", math.nan),
        means["perf/tokens_per_s"],
        _format_eta(eta),
    )
    return means

  def write_eval(self, step: int, summed: dict) -> dict[str, float]:
    means = reductions.means(jax.device_get(summed))
    if "eval/hard_loss" in means:
      means["eval/student_perplexity"] = math.exp(min(means["eval/hard_loss"], 80.0))
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
