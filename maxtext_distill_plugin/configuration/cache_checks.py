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

"""Checks that an offline run's teacher cache fits the student and the temperature schedule.

Run by :func:`config.build` before any model is built: a cache from another tokenizer, vocabulary or sequence
length, or a temperature schedule that the cache's tail statistics cannot serve, is refused with exit 2.
"""

import os

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration.settings import DistillSettings


def check_cache_matches(directory: str, student, settings: DistillSettings) -> None:
  """Refuses a teacher cache made for another tokenizer, vocabulary or sequence length (manifest only: cheap)."""
  import hashlib  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.teacher_cache import any_format  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.teacher_cache import format as cache_format  # pylint: disable=import-outside-toplevel

  if not any_format.is_plugin_cache(directory):
    _check_upstream_cache_matches(directory, student, settings)
    return
  identity = cache_format.read_manifest(directory).identity
  if identity.vocab_size != student.vocab_size:
    raise errors.ConfigError(
        "vocab_size", f"student={student.vocab_size} cache={identity.vocab_size}", "use a cache of this tokenizer."
    )
  if identity.max_target_length != student.max_target_length:
    raise errors.ConfigError(
        "max_target_length",
        f"student={student.max_target_length} cache={identity.max_target_length}",
        f"set max_target_length={identity.max_target_length}, or cache the teacher at this length.",
    )
  tokenizer = str(student.tokenizer_path)
  if identity.tokenizer_sha256 and os.path.isfile(tokenizer):
    with open(tokenizer, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    if digest != identity.tokenizer_sha256:
      raise errors.ConfigError(
          "tokenizer_path",
          f"student={tokenizer} (sha256 {digest[:12]}) cache={identity.tokenizer_path}"
          f" ({identity.tokenizer_sha256[:12]})",
          "train with the tokenizer the cache was written with.",
      )
  if settings.extract_features:
    raise errors.ConfigError(
        "distill_beta", settings.distill_beta, "a teacher cache holds logits only: set distill_beta=0 offline."
    )
  if settings.distill_offline_tail == "bucket" and not identity.tail_logmass_known:
    raise errors.ConfigError(
        "distill_offline_tail", "bucket", "this cache stores no tail mass: use distill_offline_tail=renormalize."
    )
  has_tail = identity.top_k < identity.vocab_size  # k = V: no tail, exact at any T
  if settings.distill_offline_tail != "renormalize" and identity.tail_logmass_known and has_tail:
    _check_cache_temperatures(directory, identity, settings)


def _check_cache_temperatures(directory: str, identity, settings: DistillSettings) -> None:
  """A bucket tail is exact at T != 1 only with the tail's Renyi entropies, and only over the T they cover."""
  from maxtext_distill_plugin.loss import sparse_losses  # pylint: disable=import-outside-toplevel

  schedule = {"distill_temperature": settings.distill_temperature}
  if settings.distill_temperature_end is not None:
    schedule["distill_temperature_end"] = settings.distill_temperature_end
  # The schedules move T monotonically from distill_temperature to distill_temperature_end: the ends bound it.
  if not identity.tail_renyi_orders:
    for key, value in schedule.items():
      if value != 1.0:
        raise errors.ConfigError(
            key,
            value,
            f"{directory} is a format-1 cache: its tail bucket is exact at T = 1 only. Re-cache with this plugin's"
            " save_top_k_teacher_logits (format 2 stores the tail statistics for T in"
            f" {list(sparse_losses.TEMPERATURE_RANGE)}), or set distill_offline_tail=renormalize.",
        )
    return
  if tuple(identity.tail_renyi_orders) != tuple(sparse_losses.TAIL_RENYI_ORDERS):
    raise errors.ConfigError(
        "offline_data_dir",
        directory,
        f"its tail Renyi orders {list(identity.tail_renyi_orders)} are not this plugin's"
        f" {list(sparse_losses.TAIL_RENYI_ORDERS)}: re-cache with this plugin's save_top_k_teacher_logits.",
    )
  low, high = sparse_losses.TEMPERATURE_RANGE
  for key, value in schedule.items():
    if not low <= value <= high:
      raise errors.ConfigError(
          key,
          value,
          f"the cache's tail statistics cover T in [{low:g}, {high:g}] (tau = 1/T in"
          f" {list(identity.tail_renyi_orders)}): keep the schedule in that range, or set"
          " distill_offline_tail=renormalize (no tail, any T).",
      )


def _check_upstream_cache_matches(directory: str, student, settings: DistillSettings) -> None:
  """A cache written by upstream's tool (read in place): sequence length, id range, no tail."""
  from maxtext_distill_plugin.teacher_cache import upstream_interop  # pylint: disable=import-outside-toplevel

  try:
    cache = upstream_interop.UpstreamCache(directory)
  except (FileNotFoundError, ValueError) as e:
    raise errors.ConfigError(
        "offline_data_dir", directory, f"it is neither a maxtext-distill cache (no manifest.json) nor upstream's ({e})."
    ) from None
  if cache.max_target_length != student.max_target_length:
    raise errors.ConfigError(
        "max_target_length",
        f"student={student.max_target_length} cache={cache.max_target_length}",
        f"set max_target_length={cache.max_target_length}, or cache the teacher at this length.",
    )
  largest_id = int(cache[0]["teacher_topk_ids"].max())
  if largest_id >= student.vocab_size:
    raise errors.ConfigError(
        "vocab_size", f"student={student.vocab_size} cache ids up to {largest_id}", "use a cache of this tokenizer."
    )
  if settings.distill_offline_tail == "bucket":
    raise errors.ConfigError(
        "distill_offline_tail", "bucket", "upstream's caches store no tail mass: use distill_offline_tail=renormalize."
    )
  if settings.extract_features:
    raise errors.ConfigError(
        "distill_beta", settings.distill_beta, "a teacher cache holds logits only: set distill_beta=0 offline."
    )
