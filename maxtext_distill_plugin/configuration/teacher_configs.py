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

"""The teacher's MaxText config, or several teachers' (``teachers:``), built from the global config.

Precedence for each teacher: YAML < shared CLI keys < its overrides (``teacher_overrides``, or its entry's
``overrides`` in ``teachers:``) < the run-level ``distill_*`` section. CLI keys reach the student only, except
:data:`TEACHER_SHARED_KEYS`: the batch shape (the teacher reads the student's batches) and the process environment
(``hardware`` and friends), without which the teacher could not run in the same process at all.
"""

import dataclasses
from typing import Any, Callable

from maxtext_distill_plugin.configuration import checkpoint_paths
from maxtext_distill_plugin.configuration import multi_teacher
from maxtext_distill_plugin.configuration.settings import DistillSettings

BATCH_SHAPE_KEYS = ("per_device_batch_size", "max_target_length", "gradient_accumulation_steps")
# compile_topology_num_slices goes with compile_topology: without it the teacher would size its batch for -1 slices.
TEACHER_SHARED_KEYS = BATCH_SHAPE_KEYS + (
    "hardware",
    "skip_jax_distributed_system",
    "jax_cache_dir",
    "compile_topology",
    "compile_topology_num_slices",
)


def entries(
    global_config,
    settings: DistillSettings,
    teacher_overrides: dict,
    check_override_keys: Callable[[str, dict], None],
    *,
    offline: bool,
) -> tuple[tuple[tuple[str, dict], ...], dict]:
  """``(teachers: entries, the overrides of "the teacher")``: the checked ``(name, overrides)`` pairs of
  ``teachers:`` (empty for one teacher) and the overrides of the teacher that stands for all where one is needed
  (student initialisation): ``teacher_overrides``, or the first entry's. ``offline``: the run reads one cache or
  one per teacher."""
  teacher_entries = multi_teacher.entries(getattr(global_config, "teachers", None), teacher_overrides)
  for name, overrides in teacher_entries:
    check_override_keys(f"teachers.{name}.overrides", overrides)
  multi_teacher.check_settings(tuple(n for n, _ in teacher_entries), settings, offline=offline)
  if teacher_entries:
    teacher_overrides = teacher_entries[0][1]
  return teacher_entries, teacher_overrides


def weight_dtype(settings: DistillSettings, teacher, teacher_overrides: dict):
  """The frozen teacher's parameter dtype: ``weight_dtype`` in ``teacher_overrides`` when set there, else
  ``distill_teacher_weight_dtype`` (``compute``: the teacher's own ``dtype``)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  if "weight_dtype" in teacher_overrides:
    return jnp.dtype(teacher.weight_dtype)
  if settings.distill_teacher_weight_dtype != "compute":
    return jnp.dtype(settings.distill_teacher_weight_dtype)
  return jnp.dtype(teacher.dtype)


def build(
    initialize: Callable[..., Any],
    base: list[str],
    global_config,
    cli: dict[str, str],
    settings: DistillSettings,
    teacher_overrides: dict,
    teacher_entries: tuple[tuple[str, dict], ...],
    *,
    plan: bool,
) -> tuple[Any, tuple[tuple[str, Any], ...]]:
  """``(teacher config, ((name, config), ...) of teachers:)`` of an online run; checks each checkpoint path.

  Args:
    initialize: MaxText's config initialisation with the plugin's config class (``config._initialize``).
    base: ``[program, yaml]``: the YAML every model's config starts from.
    global_config: the run's config (YAML and CLI), for the values of the shared CLI keys.
    cli: the CLI's ``key=value`` pairs.
    settings: the run-level ``distill_*`` section; the teacher sows exactly when the student does.
    teacher_overrides: the single teacher's overrides (the first entry's with ``teachers:``).
    teacher_entries: :func:`entries`' checked ``teachers:`` list, empty for one teacher.
    plan: the planner's build, which accepts checkpoint paths that do not exist yet.
  """
  shared = {k.split(".")[0]: getattr(global_config, k.split(".")[0]) for k in cli if k in TEACHER_SHARED_KEYS}
  # The teacher never reads data (it scores the student's batches), so MaxText's data-source checks are kept off it.
  run_level = settings.model_dump()
  inert_data = {"dataset_type": "synthetic"}

  def one(overrides: dict):
    keys = {**inert_data, **shared, **overrides, **run_level}
    member = initialize(base, log_config=False, **keys)
    storage = weight_dtype(settings, member, overrides)
    if storage != member.weight_dtype:  # the frozen teacher keeps no float32 master copy it would never update
      member = initialize(base, log_config=False, **{**keys, "weight_dtype": storage.name})
    return member

  teacher = one(teacher_overrides)
  checkpoint_paths.check_path("teacher_overrides.load_parameters_path", teacher.load_parameters_path, plan)
  teachers = []
  for name, overrides in teacher_entries:
    member = one(overrides)
    checkpoint_paths.check_path(f"teachers.{name}.overrides.load_parameters_path", member.load_parameters_path, plan)
    teachers.append((name, member))
  return teacher, tuple(teachers)


def attach(configs, teachers: tuple[tuple[str, Any], ...]):
  """``configs`` with several teachers: ``teachers`` in order and the first one as ``teacher``."""
  if not teachers:
    return configs
  return dataclasses.replace(configs, teacher=teachers[0][1], teachers=teachers)
