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

"""On-policy batches: each step's prompts come from another source, and the sampler may complete them.

The prompt source's batch of step ``n`` is handed to :meth:`on_policy.OnPolicy.batch_for_step`, which draws from
``(seed, n)`` whether step ``n`` trains on sampled completions of its prompts and, if so, samples them from the
current student (or the teacher). So the position is the prompt source's plus the step: :meth:`skip_to` moves both,
and a resumed run samples exactly what an uninterrupted one does.
"""

from maxtext_distill_plugin.training.sources import base


class SampledSource:
  """A :class:`base.TrainingSource`: ``prompts``' batches, replaced by ``sampler``'s completions on the drawn steps.

  ``sampler`` is an :class:`on_policy.OnPolicy` (or anything with its ``batch_for_step``, ``run_step`` and
  ``eval_metrics``).
  """

  def __init__(self, prompts: base.BatchSource, sampler):
    self.prompts = prompts
    self._sampler = sampler
    self._step = 0

  def skip_to(self, step: int) -> None:
    self.prompts.skip_to(step)
    self._step = step

  def next(self, state, teacher_state) -> tuple[dict, dict]:
    prompt_batch, metrics = self.prompts.next(state, teacher_state)
    batch, sample_metrics = self._sampler.batch_for_step(self._step, state, teacher_state, prompt_batch)
    self._step += 1
    return batch, {**metrics, **sample_metrics}

  def step(self, train_step, state, teacher_state, *, timed: bool) -> tuple[object, dict]:
    """Samples (on the drawn steps) and trains; a ``timed`` step times sampling, the teacher's scoring and the update
    apart (:meth:`on_policy.OnPolicy.run_step`)."""
    prompt_batch, metrics = self.prompts.next(state, teacher_state)
    state, step_metrics = self._sampler.run_step(train_step, self._step, state, teacher_state, prompt_batch, timed=timed)
    self._step += 1
    return state, {**metrics, **step_metrics}

  def eval_metrics(self, state, teacher_state, batch: dict, rows: int | None) -> dict:
    """The teacher's NLL of the student's greedy completions of the held-out prompts (:meth:`OnPolicy.eval_metrics`)."""
    return {
        **self.prompts.eval_metrics(state, teacher_state, batch, rows),
        **self._sampler.eval_metrics(state, teacher_state, batch, rows),
    }
