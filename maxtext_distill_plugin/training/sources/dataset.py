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

"""Batches from MaxText's input pipeline: the ``DataLoader`` that ``train_utils.setup_train_loop`` builds.

One loader batch per optimizer step (gradient accumulation splits it inside the step), placed on the student's data
sharding by MaxText. Resuming is :func:`data_resume.continue_data`: nothing to do where MaxText restored the Grain
iterator with the checkpoint, otherwise the batches of the steps already trained on are drawn and dropped.
"""

from maxtext_distill_plugin.training import data_resume
from maxtext_distill_plugin.training.sources import base


class DatasetSource(base.Dispatched):
  """A :class:`base.TrainingSource` over MaxText's ``DataLoader``."""

  def __init__(self, config, data_loader):
    """``config``: the student's MaxText config; ``data_loader``: MaxText's ``DataLoader`` of it."""
    self._config = config
    self._loader = data_loader
    self._started = False

  def skip_to(self, step: int) -> None:
    if self._started:
      raise ValueError("a dataset source is positioned once, before its first batch: its iterator cannot go back")
    self._started = True
    data_resume.continue_data(self._config, self._loader, step)

  def next(self, state, teacher_state) -> tuple[dict, dict]:
    del state, teacher_state  # the data does not depend on the models
    self._started = True
    return self._loader.load_next_batch(), {}
