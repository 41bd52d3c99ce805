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

"""The seam between the trainer loop and its data: a :class:`BatchSource` gives the batch of each optimizer step.

The loop reads ``batch, metrics = source.next(state, teacher_state, timed=...)`` and never asks where the batch came
from. Implementations:

* :class:`dataset.DatasetSource`: MaxText's input pipeline (``setup_train_loop``'s ``DataLoader``).
* :class:`cache.CacheSource`: an offline teacher cache, the teacher's top-k carried with each batch.
* :class:`sampled.SampledSource`: on-policy; the prompts of another source's batches completed by the sampler.

:func:`choice.open_sources` is the one place that picks them for a run.
"""

from typing import Protocol


class BatchSource(Protocol):
  """Where the batches of a run come from, one per optimizer step, in an order that a resumed run can reproduce.

  The position is the optimizer step: a resumed run calls :meth:`skip_to` with the step its checkpoint holds, and
  then gets the batches an uninterrupted run trains on from that step (for MaxText's Grain pipeline, the iterator
  MaxText restores with the checkpoint is that position already).
  """

  # Whether the loop also times the train step on the steps it asks to be ``timed`` (logged as perf/step_seconds).
  times_train_step: bool

  def skip_to(self, step: int) -> None:
    """Positions the source at the batch of optimizer ``step``; called once, before the first :meth:`next`."""

  def next(self, state, teacher_state, *, timed: bool = False) -> tuple[dict, dict]:
    """``(batch, metrics)`` of the next optimizer step.

    Args:
      state: the student's train state (``nnx.split``), for sources that sample from the student.
      teacher_state: the teacher's state, or None without a teacher in memory.
      timed: this step ends a logging window; a source may then wait for the device to time its own work.

    Returns:
      The batch the compiled step reads (MaxText's keys, plus the cached teacher's offline) and the source's own
      (sum, count) metrics, logged with the step's (every step of a run returns the same keys).
    """

  def eval_metrics(self, state, teacher_state, batch: dict, rows: int | None) -> dict:
    """Metrics the source adds to an eval on the held-out ``batch`` (its first ``rows`` rows scored); often none."""
