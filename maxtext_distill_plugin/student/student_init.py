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

"""Upstream's student-side keys, checked and resolved before any model is built.

- ``student_params_to_update`` (partial training, :mod:`freezing`);
- ``distill_weights_copy_map`` (teacher weights into the student, :mod:`weight_copy`);
- the learn-to-init keys (``learn_to_init_mode``, ``lti_*``, ``attn_module_name``,
  ``distill_student_weights_share_map``): refused when set, with the reason; the
  plugin does not run upstream's learn-to-init phase and never ignores a key.

They describe the trained student, so ``teacher_overrides`` may not set them.
"""

import dataclasses
from typing import Any, Callable

from absl import logging

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.student import freezing
from maxtext_distill_plugin.student import weight_copy

# Upstream's learn-to-init keys and their defaults (all falsy: the phase is off).
LTI_DEFAULTS: dict[str, Any] = {
    "learn_to_init_mode": False,
    "lti_use_general_linear_map": False,
    "lti_layer_indices": None,
    "attn_module_name": None,
    "distill_student_weights_share_map": {},
}
STUDENT_ONLY_KEYS = frozenset({freezing.KEY, freezing.HOST_MASK_KEY, weight_copy.KEY, *LTI_DEFAULTS})


@dataclasses.dataclass(frozen=True)
class StudentInit:
  """What the trainer applies to the student: copied teacher weights and the trainable count."""

  copy_pairs: tuple[tuple[str, str], ...] = ()
  # (trainable values, total values, trainable arrays, total arrays); None when not resolved before the run.
  counts: tuple[int, int, int, int] | None = None


def check_teacher_overrides(teacher_overrides: dict) -> None:
  for key in sorted(STUDENT_ONLY_KEYS & set(teacher_overrides)):
    raise errors.ConfigError(
        f"teacher_overrides.{key}",
        teacher_overrides[key],
        "the teacher is frozen; set it at the top level or in student_overrides (it acts on the student).",
    )


def check_learn_to_init(student) -> None:
  """Refuses upstream's learn-to-init phase: it rewrites the student's attention, which the plugin does not run."""
  for key, default in LTI_DEFAULTS.items():
    value = getattr(student, key, default)
    if value:  # every default leaves the phase off and is falsy
      raise errors.ConfigError(
          key,
          value,
          "upstream's learn-to-init phase (learn_to_init_mode and the lti_* keys) is not supported by"
          " maxtext-distill: it replaces the student's attention with a learned map of the teacher's and needs a"
          f" second run to fold it back. Remove {key} (default {default!r}), or run it with"
          " MAXTEXT_DISTILL_USE_UPSTREAM=1.",
      )


def resolve(student, teacher, rebuild_student: Callable[[dict], Any]):
  """Checks the keys and returns ``(student, StudentInit)``.

  Args:
    student: the student's MaxText config.
    teacher: the teacher's config, or None offline.
    rebuild_student: builds the student config again with extra keyword overrides (used to hand the resolved
      selection to MaxText's ``trainable_parameters_mask``).
  """
  check_learn_to_init(student)
  templates = list(getattr(student, freezing.KEY, None) or [])
  copy_map = dict(getattr(student, weight_copy.KEY, None) or {})
  if templates and freezing.trainable_patterns(student):
    raise errors.ConfigError(
        freezing.HOST_MASK_KEY,
        list(student.trainable_parameters_mask),
        f"set either {freezing.KEY} (upstream's distillation key) or {freezing.HOST_MASK_KEY}, not both.",
    )
  if not templates and not copy_map:
    return student, StudentInit()
  student_params = freezing.abstract_params(student)
  pairs: list[tuple[str, str]] = []
  if copy_map:
    if teacher is None:
      raise errors.ConfigError(
          weight_copy.KEY, copy_map, "offline runs have no teacher weights to copy; remove it or run online."
      )
    pairs = weight_copy.plan(copy_map, freezing.abstract_params(teacher), student_params)
  if templates:
    mask = freezing.resolve_mask(student_params, templates)
    student = rebuild_student({freezing.HOST_MASK_KEY: mask})
  counts = freezing.count(student_params, freezing.trainable_patterns(student))
  logging.info(
      "student: %d of %d parameter arrays train (%d of %d values); %d copied from the teacher",
      counts[2],
      counts[3],
      counts[0],
      counts[1],
      len(pairs),
  )
  return student, StudentInit(tuple(pairs), counts)


def apply_at_start(configs, state, teacher_state, start_step: int) -> tuple[int, int, int, int]:
  """Copies the planned teacher weights into a fresh student and logs the trainable count.

  Args:
    configs: the run's :class:`config.DistillConfigs`.
    state: the split ``TrainStateNNX`` state (``state["model"]`` holds the student); changed in place.
    teacher_state: the teacher's state, or None offline.
    start_step: 0 for a fresh run; a resumed run keeps its checkpointed weights.

  Returns:
    ``(trainable values, total values, trainable arrays, total arrays)`` of the student.
  """
  init = configs.student_init or StudentInit()
  if init.copy_pairs and start_step == 0:
    weight_copy.apply(state["model"], teacher_state, list(init.copy_pairs))
    for teacher_path, student_path in init.copy_pairs:
      logging.info("%s: teacher %s -> student %s", weight_copy.KEY, teacher_path, student_path)
  elif init.copy_pairs:
    logging.info("%s: resumed at step %d, the checkpoint's weights are kept.", weight_copy.KEY, start_step)
  counts = freezing.count(freezing.params_of_state(state["model"]), freezing.trainable_patterns(configs.student))
  logging.info(
      "student parameters: %d trainable of %d (%.2f%%), %d of %d arrays%s",
      counts[0],
      counts[1],
      100.0 * counts[0] / max(counts[1], 1),
      counts[2],
      counts[3],
      f" ({freezing.KEY}={list(getattr(configs.student, freezing.KEY, None) or [])})" if counts[2] < counts[3] else "",
  )
  return counts
