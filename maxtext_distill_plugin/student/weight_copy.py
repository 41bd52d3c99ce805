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

"""Upstream's ``distill_weights_copy_map``: teacher weights copied into the student at initialisation.

Semantics (as MaxText's distillation trainer reads the key): each item maps a
regular expression over the teacher's parameter paths (``/``-joined, matched in
full) to the student path that receives the weight; when key and value are the
same string the path is kept, otherwise the value is a ``re`` template expanded
with the match (``\\1``, ``\\g<name>``). Every key must match at least one teacher
parameter, and each receiving student parameter must exist with the same shape.

The plan (:func:`plan`) is checked before any model is built, on both models'
abstract parameters; :func:`apply` copies into a fresh student state only (a
resumed run keeps its checkpointed weights).
"""

import re

from maxtext_distill_plugin import errors

KEY = "distill_weights_copy_map"


def plan(copy_map: dict, teacher_params: dict[str, tuple], student_params: dict[str, tuple]) -> list[tuple[str, str]]:
  """``[(teacher_path, student_path), ...]`` for ``copy_map``; refuses what cannot be copied.

  Args:
    copy_map: ``{teacher_pattern: student_template}``.
    teacher_params: ``{path: (shape, dtype)}`` of the teacher.
    student_params: ``{path: (shape, dtype)}`` of the student.
  """
  if not isinstance(copy_map, dict):
    raise errors.ConfigError(KEY, copy_map, f'give a mapping, e.g. {KEY}={{"token_embedder/.*": "token_embedder/.*"}}.')
  pairs: dict[str, str] = {}
  for pattern, template in copy_map.items():
    try:
      compiled = re.compile(str(pattern))
    except re.error as e:
      raise errors.ConfigError(f"{KEY} key", pattern, f"write a valid regular expression ({e}).") from None
    matched = False
    for teacher_path in sorted(teacher_params):
      match = compiled.fullmatch(teacher_path)
      if match is None:
        continue
      matched = True
      try:
        student_path = teacher_path if pattern == template else match.expand(str(template))
      except (re.error, IndexError) as e:
        raise errors.ConfigError(f"{KEY}[{pattern!r}]", template, f"write a valid replacement template ({e}).") from None
      if student_path not in student_params:
        raise errors.ConfigError(
            f"{KEY}[{pattern!r}]",
            template,
            f"teacher parameter {teacher_path} maps to {student_path}, which the student does not have"
            f" (it has e.g. {', '.join(sorted(student_params)[:3])}).",
        )
      teacher_shape, student_shape = teacher_params[teacher_path][0], student_params[student_path][0]
      if teacher_shape != student_shape:
        raise errors.ConfigError(
            f"{KEY}[{pattern!r}]",
            template,
            f"teacher {teacher_path} has shape {teacher_shape} but student {student_path} has {student_shape}; copy"
            " only parameters of equal shape (e.g. the same number of scanned layers).",
        )
      if student_path in pairs and pairs[student_path] != teacher_path:
        raise errors.ConfigError(
            KEY, copy_map, f"student {student_path} would receive both {pairs[student_path]} and {teacher_path}."
        )
      pairs[student_path] = teacher_path
    if not matched:
      raise errors.ConfigError(
          f"{KEY} key",
          pattern,
          f"it matches none of the teacher's parameters in full (e.g. {', '.join(sorted(teacher_params)[:3])}).",
      )
  return sorted((t, s) for s, t in pairs.items())


def apply(student_model_state, teacher_state, pairs: list[tuple[str, str]]) -> None:
  """Copies the teacher arrays of ``pairs`` into ``student_model_state`` in place (student sharding and dtype)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.student import freezing  # pylint: disable=import-outside-toplevel

  teacher = {freezing.param_path(p): v for p, v in nnx.to_flat_state(teacher_state) if isinstance(v, nnx.Param)}
  student = {freezing.param_path(p): v for p, v in nnx.to_flat_state(student_model_state) if isinstance(v, nnx.Param)}
  for teacher_path, student_path in pairs:
    target = student[student_path]
    old = target.get_value()
    # A fresh buffer: the student's state is donated to the step, the teacher's is not.
    new = jnp.array(teacher[teacher_path].get_value(), dtype=old.dtype, copy=True)
    target.set_value(jax.device_put(new, old.sharding))
