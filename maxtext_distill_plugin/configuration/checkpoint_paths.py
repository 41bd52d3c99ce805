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

"""Where the run's checkpoints come from: the paths a config names, checked before any model is built.

:mod:`checkpoint_checks` then compares what those checkpoints hold with the models the configs build.
"""

import os

from absl import logging

from maxtext_distill_plugin import errors


def require_online_teacher(teacher_overrides: dict) -> None:
  """An online run needs the teacher's trained weights."""
  if not teacher_overrides.get("load_parameters_path"):
    raise errors.ConfigError(
        "teacher_overrides.load_parameters_path",
        None,
        "online distillation needs trained teacher weights: set teacher_overrides: {load_parameters_path:"
        " <run>/checkpoints/<step>/items} in the YAML, or teacher_overrides.load_parameters_path=... on the CLI.",
    )


def check_path(key: str, path: str, plan: bool = False) -> None:
  """``path`` (the value of ``key``) is an Orbax checkpoint directory; remote paths are left to Orbax.

  ``plan``: the planner reads no weights, so a path that does not exist yet is accepted with a warning.
  """
  if "://" in path:  # Remote storage is checked by Orbax when it restores.
    return
  if plan and not os.path.exists(path):
    logging.warning("%s=%s does not exist; the planner reads no weights, a run would refuse it.", key, path)
    return
  if not os.path.isdir(path):
    raise errors.ConfigError(
        key, path, "point it at an existing MaxText checkpoint, e.g. <run>/checkpoints/<step>/items."
    )
  if not (os.path.exists(os.path.join(path, "_METADATA")) or os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))):
    raise errors.ConfigError(
        key, path, "this directory is not an Orbax checkpoint (no _METADATA); use <run>/checkpoints/<step>/items."
    )
