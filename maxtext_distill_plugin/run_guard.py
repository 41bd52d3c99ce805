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

"""Run safety: preemption by SIGTERM, and a stop on the first non-finite loss term.

SIGTERM (what schedulers send before killing a job) only sets a flag; the loop
notices it between steps, writes a checkpoint of the last completed step and
exits 0. Non-finite values are detected from the per-step metric sums, which
the loop checks before any checkpoint is written, so a checkpoint never holds
parameters updated from a NaN/Inf loss.
"""

import signal
import threading

from absl import logging
import jax
import numpy as np

EXIT_NON_FINITE = 3


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or Inf."""

  def __init__(self, step: int, term: str, value: float, last_checkpoint: int | None):
    self.step, self.term = step, term
    super().__init__(
        f"{term} is {value} at step {step + 1} (the first non-finite step); the run stopped before saving it."
        f" Last good checkpoint: {last_checkpoint if last_checkpoint is not None else 'none'}."
        " Fix: lower learning_rate or distill_temperature, check gradient_clipping_threshold, or inspect that batch."
    )


class PreemptionFlag:
  """Turns SIGTERM into a request to checkpoint and stop; a no-op off the main thread."""

  def __init__(self):
    self.requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: finishing the current step, then checkpointing and exiting.")
    self.requested = True

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


class FiniteGuard:
  """Remembers each step's metric sums until they are checked on the host."""

  def __init__(self):
    self._pending: list[tuple[int, dict]] = []
    self.last_checkpoint: int | None = None

  def add(self, step: int, metrics: dict) -> None:
    self._pending.append((step, metrics))

  def check(self) -> None:
    """Raises NonFiniteLossError for the first pending step with a non-finite term."""
    pending, self._pending = self._pending, []
    for step, metrics in jax.device_get(pending):
      for name, (total, _) in sorted(metrics.items()):
        if not np.isfinite(total):
          raise NonFiniteLossError(step, name, float(total), self.last_checkpoint)
