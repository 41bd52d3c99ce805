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

"""One way to open a teacher cache of either format for training: :func:`open_any` gives a :class:`CacheReader`.

* This plugin's format (a directory with ``manifest.json``): :func:`reader.open_cache`, which checks the manifest,
  every shard's size and this host's checksums first.
* MaxText's own ``save_top_k_teacher_logits.py`` output, read in place: :class:`upstream_interop.UpstreamCache`
  (no tail mass: it trains with ``distill_offline_tail=renormalize``).
"""

import os
from typing import Protocol

import numpy as np

from maxtext_distill_plugin.teacher_cache import format as cache_format
from maxtext_distill_plugin.teacher_cache import reader
from maxtext_distill_plugin.teacher_cache import upstream_interop


class CacheReader(Protocol):
  """Random access to a cache's records by global index, each a dict of NumPy arrays (:mod:`reader`'s layout)."""

  directory: str
  top_k: int
  tail_logmass_known: bool  # False: the tail mass is unknown, the teacher is renormalised over its top-k

  def __len__(self) -> int:
    ...

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    ...

  def __getitems__(self, indices) -> list[dict[str, np.ndarray]]:
    ...


def is_plugin_cache(directory: str) -> bool:
  """Whether ``directory`` holds this plugin's format (a manifest); otherwise it is read as upstream's files."""
  return os.path.exists(os.path.join(directory, cache_format.MANIFEST_NAME))


def open_any(directory: str, *, process_index: int = 0, process_count: int = 1) -> CacheReader:
  """The cache in ``directory``, of either format; ``process_index`` / ``process_count`` select the shards whose
  checksums this host verifies (this plugin's format)."""
  if is_plugin_cache(directory):
    return reader.open_cache(directory, process_index=process_index, process_count=process_count)
  return upstream_interop.UpstreamCache(directory)
