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

"""The one place that picks a run's batch source and its held-out batches.

* online: :class:`dataset.DatasetSource`; held out: MaxText's eval iterator.
* routed (``distill_teacher_mixture=route``): :class:`routed.RoutedSource`, one pipeline per teacher.
* offline (``offline_data_dir``): :class:`cache.CacheSource` over either cache format, or one per teacher
  (:class:`caches.CachesSource`, ``teachers:`` entries with an ``offline_data_dir`` each); held out: the YAML's
  dataset (``offline_eval``), on which the student is scored alone.
* on-policy (``distill_on_policy_fraction`` > 0, online only): :class:`sampled.SampledSource` over the dataset source,
  its prompts; held out: as online, plus the sampler's eval metrics (a new prompt source goes in its place).
"""

from typing import Iterable, NamedTuple

from absl import logging
from flax import nnx
import jax

from maxtext_distill_plugin.teacher_cache import any_format
from maxtext_distill_plugin.training import on_policy
from maxtext_distill_plugin.training.sources import base
from maxtext_distill_plugin.training.sources import cache as cache_source
from maxtext_distill_plugin.training.sources import caches as caches_source
from maxtext_distill_plugin.training.sources import dataset
from maxtext_distill_plugin.training.sources import routed
from maxtext_distill_plugin.training.sources import sampled


class RunData(NamedTuple):
  """A run's data: the training source, the held-out batches (None: no evals) and the offline tail handling."""

  train: base.BatchSource
  eval_batches: Iterable[dict] | None
  offline_tail: str | None  # how the cached teacher's tail is scored (bucket | renormalize); None: no cache


def open_sources(
    configs, mesh, data_loader, eval_iterator, *, state_graphdef, state, teacher_graphdef, special_ids
) -> RunData:
  """The data of the run ``configs`` describes, not yet positioned (the trainer calls ``train.skip_to``).

  Args:
    configs: the run's :class:`config.DistillConfigs`.
    mesh: the student's mesh.
    data_loader: MaxText's ``DataLoader`` from ``setup_train_loop``.
    eval_iterator: MaxText's eval iterator from ``setup_train_loop`` (None when evals are off).
    state_graphdef: ``nnx.split`` of the student's train state, with ``state``: the sampler's student.
    state: the student's train state (``nnx.split``).
    teacher_graphdef: the teacher's graph (None offline).
    special_ids: ``(eos_id, pad_id)`` for on-policy sampling; None when the run does not sample.
  """
  if configs.offline:
    source, offline_tail = open_cache_source(configs, data_loader.input_data_shardings)
    eval_batches = offline_eval_iterator(configs, mesh)
  elif configs.routes:  # one pipeline per teacher, stacked in row blocks (the loader above stays idle)
    source = routed.RoutedSource(
        configs.routes, mesh, data_loader.input_data_shardings, int(configs.student.gradient_accumulation_steps)
    )
    offline_tail, eval_batches = None, eval_iterator
  else:
    source, offline_tail, eval_batches = dataset.DatasetSource(configs.student, data_loader), None, eval_iterator
  if special_ids is not None:
    student_graphdef = nnx.graphdef(nnx.merge(state_graphdef, state).model)
    sampler = on_policy.OnPolicy(configs, mesh, student_graphdef, teacher_graphdef, special_ids, state_graphdef)
    source = sampled.SampledSource(source, sampler)
  return RunData(source, eval_batches, offline_tail)


def open_cache_source(configs, data_sharding) -> tuple[base.BatchSource, str]:
  """The teacher cache (either format) as a :class:`cache.CacheSource`, or one per teacher as a
  :class:`caches.CachesSource`, and the tail handling of the sparse KL (``auto``: bucket where every cache stores its
  tail mass)."""
  student, settings = configs.student, configs.settings
  named = configs.caches or (("teacher", configs.global_config.offline_data_dir),)
  opened = [
      any_format.open_any(path, process_index=jax.process_index(), process_count=jax.process_count()) for _, path in named
  ]
  tail = settings.distill_offline_tail
  if tail == "auto":
    tail = "bucket" if all(cache.tail_logmass_known for cache in opened) else "renormalize"
  seed = int(student.data_shuffle_seed) if student.enable_data_shuffling else None
  sources = tuple(
      cache_source.CacheSource(
          cache, global_batch=int(student.global_batch_size_to_load), data_sharding=data_sharding, shuffle_seed=seed
      )
      for cache in opened
  )
  for cache in opened:
    logging.info(
        "Offline distillation from %s (k=%d, tail=%s); no teacher in memory.", cache.directory, cache.top_k, tail
    )
  if not configs.caches:
    return sources[0], tail
  return caches_source.CachesSource(tuple(name for name, _ in named), sources, data_sharding), tail


def offline_eval_iterator(configs, mesh):
  """Held-out batches for an offline run, from the YAML's dataset (the cache holds training batches only); the
  student is scored alone on them. None when evals are off."""
  if configs.offline_eval is None:
    return None
  from maxtext.input_pipeline import input_pipeline_interface  # pylint: disable=import-outside-toplevel

  _, eval_iterator = input_pipeline_interface.create_data_iterator(configs.offline_eval, mesh)
  return eval_iterator
