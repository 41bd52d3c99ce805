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

"""Shared fixtures: a tiny teacher checkpoint made by MaxText's own pre-training, and run helpers."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_YAML = str(REPO / "configs" / "distillation-cpu-tiny.yml")
DOCUMENTED_MODULE = "maxtext.trainers.post_train.distillation.train_distill"

# What every MaxText run in the tests needs on the CPU, before any model shape.
CPU_RUN_ARGS = [
    "hardware=cpu",
    "skip_jax_distributed_system=True",
    "attention=dot_product",
    "dtype=float32",
    "weight_dtype=float32",
    "jax_cache_dir=",
    "override_model_config=True",
]

# The tiny shape of configs/distillation-cpu-tiny.yml (other families add their own keys to it).
TINY_SHAPE_ARGS = [
    "base_emb_dim=64",
    "base_num_query_heads=4",
    "base_num_kv_heads=4",
    "head_dim=16",
    "base_mlp_dim=128",
    "vocab_size=512",
]

# The tiny architecture of configs/distillation-cpu-tiny.yml, for MaxText's own trainers.
TINY_MODEL_ARGS = [
    *CPU_RUN_ARGS,
    *TINY_SHAPE_ARGS,
    "dataset_type=synthetic",
    "max_target_length=32",
    "per_device_batch_size=2",
    "enable_checkpointing=True",
    "async_checkpointing=False",
]


def subprocess_env() -> dict:
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("MAXTEXT_DISTILL_USE_UPSTREAM", None)
  return env


def maxtext_base_yml() -> str:
  import maxtext  # pylint: disable=import-outside-toplevel

  return str(pathlib.Path(maxtext.__file__).parent / "configs" / "base.yml")


def maxtext_pretrain(out_dir, run_name: str, *extra: str) -> subprocess.CompletedProcess:
  """Runs MaxText's own pre-training on the tiny model."""
  cmd = [sys.executable, "-m", "maxtext.trainers.pre_train.train", maxtext_base_yml(), f"run_name={run_name}"]
  cmd += [f"base_output_directory={out_dir}", *TINY_MODEL_ARGS, *extra]
  return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory) -> str:
  """Items dir of a 2-layer tiny teacher trained 3 steps by MaxText (the student config has 1 layer)."""
  out = tmp_path_factory.mktemp("teacher")
  proc = maxtext_pretrain(out, "teacher", "base_num_decoder_layers=2", "steps=3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  items = out / "teacher" / "checkpoints" / "2" / "items"
  assert items.is_dir()
  return str(items)


def run_cli(*args: str, cwd=REPO, module: str = DOCUMENTED_MODULE, env=None, timeout=600) -> subprocess.CompletedProcess:
  """Runs the documented command in a fresh interpreter."""
  return subprocess.run(
      [sys.executable, "-m", module, *args],
      cwd=cwd,
      env=env or subprocess_env(),
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
  )


def committed_steps(checkpoint_dir) -> list[int]:
  """Checkpoint steps that Orbax committed (a half-written step has no commit marker)."""
  checkpoint_dir = pathlib.Path(checkpoint_dir)
  if not checkpoint_dir.is_dir():
    return []
  return sorted(int(p.name) for p in checkpoint_dir.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists())


def read_metrics(path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def token_fields(tokens: np.ndarray) -> dict[str, np.ndarray]:
  """One unpacked record's token fields as MaxText's pipelines give them: ``inputs``, ``targets`` (the next token)
  and their segmentation (all 1) and positions."""
  length = len(tokens)
  return {
      "inputs": tokens,
      "targets": np.roll(tokens, -1),
      "inputs_segmentation": np.ones(length, np.int32),
      "targets_segmentation": np.ones(length, np.int32),
      "inputs_position": np.arange(length, dtype=np.int32),
      "targets_position": np.arange(length, dtype=np.int32),
  }


def tiny_configs(tmp_path, teacher_checkpoint: str, *overrides: str, run_name: str = "run"):
  """The three configs of a tiny run (``TINY_YAML``) against ``teacher_checkpoint``, written under ``tmp_path``."""
  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

  argv = [
      "train_distill",
      TINY_YAML,
      f"run_name={run_name}",
      f"base_output_directory={tmp_path}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      *overrides,
  ]
  return config.build(argv)


def train_in_process(tmp_path, teacher_checkpoint: str, *overrides: str, run_name: str = "run"):
  """Builds the three configs and trains in this process; returns the TrainResult."""
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

  return trainer.train(tiny_configs(tmp_path, teacher_checkpoint, *overrides, run_name=run_name))


# Opt-in markers: tests deselected (not skipped) from `make test` unless their option is given. The default suite keeps
# one test of each kind (dense, MoE, MLA; online, offline, on-policy); these add breadth at a cost in minutes.
OPT_IN_MARKERS = {
    "families": "every model family of the family test (make test-families)",
    "slow": "further recipes, study and benchmark smoke runs, long end-to-end checks (make test-slow)",
    "scale": "the planner compiling for a TPU topology through libtpu (make test-scale, in .venv-tpu)",
}


def pytest_addoption(parser):
  for marker, description in OPT_IN_MARKERS.items():
    parser.addoption(f"--{marker}", action="store_true", default=False, help=f"also run the tests marked {description}")


def pytest_configure(config):
  for marker, description in OPT_IN_MARKERS.items():
    config.addinivalue_line("markers", f"{marker}: {description}")


def pytest_collection_modifyitems(config, items):
  """Deselects (does not skip) the opt-in tests whose option is not given."""
  left_out = {marker for marker in OPT_IN_MARKERS if not config.getoption(f"--{marker}")}

  # Markers, not keywords: an item's keywords also hold its directories' names (a clone in a folder named "scale").
  def opted_out(item) -> bool:
    return bool(left_out & {marker.name for marker in item.iter_markers()})

  deselected = [item for item in items if opted_out(item)]
  if deselected:
    config.hook.pytest_deselected(items=deselected)
    items[:] = [item for item in items if not opted_out(item)]
