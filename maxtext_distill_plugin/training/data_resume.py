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

"""A resumed run continues the training data at the first batch it has not trained on, for every dataset type.

MaxText checkpoints the data iterator only for ``dataset_type=grain`` (the
``iter`` item next to the state) and restores it in ``setup_train_loop``. Every
other pipeline (``hf``, ``tfds``, ``c4_mlperf``, ``olmo_grain``, and a grain
checkpoint without an ``iter`` item) comes back at its first batch. Those
pipelines are deterministic for a fixed config (seeded shuffles, one Grain
worker at most for hf), so the position is recovered by drawing and dropping
the batches the run already trained on: the dataset source (:mod:`sources.dataset`)
draws one loader batch per optimizer step (gradient accumulation splits that batch inside the step), so
that is ``start_step`` batches, drawn through MaxText's own ``DataLoader`` so
that iterator lists and ``reuse_example_batch`` count exactly as in training.

``synthetic`` data repeats one batch and an offline run indexes its cache by
step (:mod:`sources.cache`): neither needs anything.
"""

import os
import time

from absl import logging

# Loader batches the trainer draws per optimizer step (accumulation splits one batch inside the step).
LOADER_BATCHES_PER_STEP = 1
_NOTHING_TO_SKIP = frozenset({"synthetic"})


def dataset_kind(config) -> str:
  """``dataset_type`` as its plain value (MaxText's is a str Enum, which logs as its member name)."""
  return str(getattr(config.dataset_type, "value", config.dataset_type))


def grain_iterator_restored(config, start_step: int) -> bool:
  """Whether MaxText restored the grain iterator: the checkpoint MaxText resumed from holds an ``iter`` item.

  MaxText resumes from the latest checkpoint, step ``start_step - 1``. Remote
  checkpoint directories cannot be listed cheaply here; MaxText's restore is
  trusted there.
  """
  directory = str(config.checkpoint_dir)
  if "://" in directory:
    return True
  return os.path.isdir(os.path.join(directory, str(start_step - 1), "iter"))


def batches_to_skip(config, start_step: int, *, offline: bool) -> int:
  """How many loader batches a run resumed at ``start_step`` must drop to reach its next unseen batch."""
  if start_step <= 0 or offline or dataset_kind(config) in _NOTHING_TO_SKIP:
    return 0
  if dataset_kind(config) == "grain" and grain_iterator_restored(config, start_step):
    return 0
  return start_step * LOADER_BATCHES_PER_STEP


def continue_data(config, data_loader, start_step: int, *, offline: bool = False) -> int:
  """Brings ``data_loader`` to the first batch of step ``start_step``; returns the number of batches dropped.

  Args:
    config: the student's MaxText config (``dataset_type``, ``checkpoint_dir``).
    data_loader: MaxText's ``DataLoader`` from ``setup_train_loop``.
    start_step: the optimizer step the run resumes at (0 for a fresh run).
    offline: the run reads a teacher cache (batches are indexed by step).
  """
  count = batches_to_skip(config, start_step, offline=offline)
  if count == 0:
    if start_step > 0 and dataset_kind(config) == "grain" and not offline:
      logging.info("Data resume: grain iterator restored from the checkpoint; continuing at step %d.", start_step)
    return 0
  logging.warning(
      "Data resume: dataset_type=%s has no saved iterator position; skipping the %d batches of steps [0, %d) to"
      " continue at the next unseen batch.",
      dataset_kind(config),
      count,
      start_step,
  )
  started = time.perf_counter()
  for _ in range(count):
    data_loader.load_next_batch_pre_sharding()
  logging.info("Data resume: skipped %d batches in %.1fs.", count, time.perf_counter() - started)
  return count
