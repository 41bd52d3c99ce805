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

The loop runs ``state, metrics = source.step(train_step, state, teacher_state, timed=...)`` and never asks where the
batch came from. Implementations:

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

  def skip_to(self, step: int) -> None:
    """Positions the source at the batch of optimizer ``step``; called once, before the first :meth:`next`."""

  def next(self, state, teacher_state) -> tuple[dict, dict]:
    """``(batch, metrics)`` of the next optimizer step.

    Args:
      state: the student's train state (``nnx.split``), for sources that sample from the student.
      teacher_state: the teacher's state, or None without a teacher in memory.

    Returns:
      The batch the compiled step reads (MaxText's keys, plus the cached teacher's offline) and the source's own
      (sum, count) metrics, logged with the step's (every step of a run returns the same keys).
    """

  def eval_metrics(self, state, teacher_state, batch: dict, rows: int | None) -> dict:
    """Metrics the source adds to an eval on the held-out ``batch`` (its first ``rows`` rows scored); often none."""


class TrainingSource(BatchSource, Protocol):
  """A :class:`BatchSource` the trainer loop trains on: it also runs the optimizer step on its batch.

  The source runs the step so that one whose batches cost device work of their own (on-policy sampling) can time
  that work against the update on a ``timed`` step; a prompt source wrapped by another needs only
  :class:`BatchSource`.
  """

  def step(self, train_step, state, teacher_state, *, timed: bool) -> tuple[object, dict]:
    """``(state, metrics)`` after ``train_step`` on :meth:`next`'s batch, the source's metrics included.

    ``timed``: this step ends a logging window; only then may the source wait for the device to time its work.
    """


class Dispatched:
  """The :class:`TrainingSource` part of a source whose batches cost no device work of their own (the dataset, a
  cache): the step is dispatched and returns at once, and the source adds nothing to an eval."""

  def next(self, state, teacher_state) -> tuple[dict, dict]:
    raise NotImplementedError

  def step(self, train_step, state, teacher_state, *, timed: bool) -> tuple[object, dict]:
    del timed  # nothing of its own to time: the loop's window timing covers the step
    batch, source_metrics = self.next(state, teacher_state)
    state, metrics = train_step(state, teacher_state, batch)
    return state, {**metrics, **source_metrics}

  def eval_metrics(self, state, teacher_state, batch: dict, rows: int | None) -> dict:
    del state, teacher_state, batch, rows
    return {}
