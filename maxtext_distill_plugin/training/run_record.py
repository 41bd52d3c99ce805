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

"""What a run was started with, written into its run directory (``<base_output_directory>/<run_name>``).

- ``config.yml``: the student's resolved MaxText config (every key, as MaxText's
  ``save_config_to_gcs`` writes its own), ``teacher_config.yml`` the teacher's;
- ``command.sh``: the command line, the working directory and the environment
  variables that change a run, as a script: ``bash command.sh`` starts the same run.

Written by process 0 at every start (a resumed run records the command that resumed it).
"""

import enum
import os
import shlex
import sys

from absl import logging
import jax
import yaml

CONFIG_FILE = "config.yml"
TEACHER_CONFIG_FILE = "teacher_config.yml"
COMMAND_FILE = "command.sh"
DOCUMENTED_MODULE = "maxtext.trainers.post_train.distillation.train_distill"
# Environment variables that change what a run does (platform, plugin switch, XLA, JAX multi-process).
_ENV_PREFIXES = ("JAX_", "XLA_", "MAXTEXT_DISTILL_", "TPU_", "CUDA_VISIBLE_DEVICES", "LIBTPU_INIT_ARGS")


def run_dir(config) -> str:
  return os.path.join(str(config.base_output_directory), str(config.run_name))


def plain(value):
  """A config value as YAML-safe data: dtypes and enums by name, tuples as lists, other objects as text."""
  if isinstance(value, dict):
    return {str(k): plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
  if isinstance(value, enum.Enum):
    return plain(value.value)
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if hasattr(value, "model_dump"):
    return plain(value.model_dump())
  return str(value)


def resolved_keys(config) -> dict:
  """Every key of a MaxText config object with its final value."""
  return plain(dict(config.get_keys()))


def command_line(argv) -> list[str]:
  """The command that started this process; ``argv`` (config.build's) when it was not the CLI."""
  orig = list(getattr(sys, "orig_argv", []) or [])
  if orig and list(argv[1:]) == list(sys.argv[1:]):
    return orig
  return [sys.executable, "-m", DOCUMENTED_MODULE, *argv[1:]]


def command_script(argv) -> str:
  env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)}
  lines = ["#!/usr/bin/env bash", "# Written by maxtext-distill at the start of this run: bash it to start the same run."]
  lines.append(f"cd {shlex.quote(os.getcwd())}")
  lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
  lines.append(shlex.join(command_line(argv)))
  return "\n".join(lines) + "\n"


def write(configs, argv) -> str | None:
  """Writes the three files; returns the run directory (None on processes other than 0)."""
  if jax.process_index() != 0:
    return None
  from etils import epath  # pylint: disable=import-outside-toplevel

  directory = epath.Path(run_dir(configs.student))
  directory.mkdir(parents=True, exist_ok=True)
  (directory / CONFIG_FILE).write_text(yaml.safe_dump(resolved_keys(configs.student), sort_keys=True))
  if configs.teacher is not None:
    (directory / TEACHER_CONFIG_FILE).write_text(yaml.safe_dump(resolved_keys(configs.teacher), sort_keys=True))
  (directory / COMMAND_FILE).write_text(command_script(argv))
  logging.info("run record: %s/{%s,%s,%s}", directory, CONFIG_FILE, TEACHER_CONFIG_FILE, COMMAND_FILE)
  return str(directory)
