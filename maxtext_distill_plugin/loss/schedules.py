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

"""Schedules for the distillation weights alpha, beta and the temperature.

Every schedule maps the optimizer step to a value:

  progress = clip(step / max_steps, 0, 1)
  constant: start
  linear:   start + (end - start) * progress
  cosine:   end + (start - end) * 0.5 * (1 + cos(pi * progress))

Past ``max_steps`` the value stays at ``end``. ``end=None`` means the value is
fixed at ``start`` whatever the schedule kind. The functions are pure and
jit-able: ``step`` may be a traced integer.
"""

import math

import jax.numpy as jnp

SCHEDULE_KINDS = ("constant", "linear", "cosine")


def schedule_value(kind: str, start: float, end: float | None, step, max_steps: int) -> jnp.ndarray:
  """Value of a ``constant | linear | cosine`` schedule at ``step``.

  Args:
    kind: one of ``SCHEDULE_KINDS``.
    start: value at step 0.
    end: value at ``max_steps`` and after; ``None`` keeps ``start``.
    step: optimizer step, a scalar (Python int or traced int32).
    max_steps: length of the schedule; must be positive.

  Returns:
    A float32 scalar.
  """
  if kind not in SCHEDULE_KINDS:
    raise ValueError(f"Unknown schedule kind {kind!r}; expected one of {SCHEDULE_KINDS}.")
  if max_steps <= 0:
    raise ValueError(f"max_steps must be positive, got {max_steps}.")
  start_value = jnp.asarray(start, jnp.float32)
  if kind == "constant" or end is None:
    return start_value
  end_value = jnp.asarray(end, jnp.float32)
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max_steps, 0.0, 1.0)
  if kind == "linear":
    return start_value + (end_value - start_value) * progress
  return end_value + (start_value - end_value) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
