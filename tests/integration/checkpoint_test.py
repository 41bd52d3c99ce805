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

"""Checkpoints: kill-and-restart resumes exactly; the distilled student loads in MaxText's own trainer."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from tests.conftest import DOCUMENTED_MODULE, REPO, TINY_YAML, maxtext_pretrain, read_metrics, run_cli, subprocess_env
from tests.conftest import committed_steps, train_in_process

_STEPS = 160


def _args(out, run_name, metrics_file, teacher_checkpoint):
  return [
      TINY_YAML,
      f"base_output_directory={out}",
      f"run_name={run_name}",
      f"metrics_file={metrics_file}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"steps={_STEPS}",
      "checkpoint_period=10",
      "log_period=1",
      "distill_alpha=0.7",
      "distill_alpha_end=0.2",
      "distill_alpha_schedule=cosine",
  ]


def test_sigkill_then_same_command_resumes_with_identical_losses(tmp_path, teacher_checkpoint):
  reference = run_cli(*_args(tmp_path, "reference", tmp_path / "ref.jsonl", teacher_checkpoint))
  assert reference.returncode == 0, reference.stderr[-3000:]

  victim = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, "-m", DOCUMENTED_MODULE, *_args(tmp_path, "victim", tmp_path / "first.jsonl", teacher_checkpoint)],
      cwd=REPO,
      env=subprocess_env(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  checkpoints = tmp_path / "victim" / "checkpoints"
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and victim.poll() is None:
    if any(step >= 20 for step in committed_steps(checkpoints)):
      break
    time.sleep(0.02)
  assert victim.poll() is None, "the run ended before it could be killed; raise _STEPS"
  os.kill(victim.pid, signal.SIGKILL)
  victim.wait()
  last_before_kill = max(committed_steps(checkpoints))
  assert last_before_kill < _STEPS - 1

  resumed = run_cli(*_args(tmp_path, "victim", tmp_path / "second.jsonl", teacher_checkpoint))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from checkpoint" in resumed.stderr
  second = {r["step"]: r for r in read_metrics(tmp_path / "second.jsonl") if "distill/total_loss" in r}
  ref = {r["step"]: r for r in read_metrics(tmp_path / "ref.jsonl") if "distill/total_loss" in r}
  resumed_steps = sorted(second)
  # Optimizer step k is logged as k + 1; the resumed run starts right after the last committed checkpoint.
  assert resumed_steps[0] >= last_before_kill + 2 and resumed_steps[-1] == _STEPS
  for step in resumed_steps:
    for name in ("distill/total_loss", "distill/hard_loss", "distill/soft_loss", "distill/alpha", "learning_rate"):
      np.testing.assert_allclose(second[step][name], ref[step][name], rtol=1e-6, err_msg=f"{name} at step {step}")


def _maxtext_losses(proc):
  found = [float(x) for x in re.findall(r"completed step: \d+,.*? loss: ([0-9.]+)", proc.stdout + proc.stderr)]
  assert found, (proc.stdout + proc.stderr)[-3000:]
  return found


def test_distilled_student_loads_through_maxtext_load_parameters_path(tmp_path, teacher_checkpoint):
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline.input_pipeline_interface import create_data_iterator  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.loss import losses  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.model import forward as model_forward  # pylint: disable=import-outside-toplevel

  result = train_in_process(
      tmp_path, teacher_checkpoint, "steps=8", "distill_alpha=0.0", "learning_rate=3e-3", run_name="student"
  )
  items = tmp_path / "student" / "checkpoints" / str(result.last_step) / "items"
  assert items.is_dir()
  first_ce = [h for h in result.history if "distill/hard_loss" in h][0]["distill/hard_loss"]

  # MaxText's own model loading, as every MaxText trainer does for load_parameters_path.
  cfgs = config.build([
      "p",
      TINY_YAML,
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"load_parameters_path={items}",
      f"base_output_directory={tmp_path / 'eval'}",
  ])
  mesh = maxtext_utils.get_mesh_from_config(cfgs.student)
  model = model_creation_utils.from_pretrained(cfgs.student, mesh=mesh)
  batch = next(create_data_iterator(cfgs.student, mesh)[0])
  logits, _ = model_forward.forward(model, batch, settings=cfgs.settings, enable_dropout=False)
  loaded_ce = float(losses.cross_entropy(logits, batch["targets"]).mean())
  assert loaded_ce < first_ce - 1.0, (loaded_ce, first_ce)

  # MaxText's own pre-training starts from it (frozen with lr=0, so every step sees the loaded weights).
  loaded = maxtext_pretrain(
      tmp_path, "loaded", "base_num_decoder_layers=1", "steps=2", "learning_rate=0", f"load_parameters_path={items}"
  )
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  fresh = maxtext_pretrain(tmp_path, "fresh", "base_num_decoder_layers=1", "steps=2", "learning_rate=0")
  loaded_losses, fresh_losses = _maxtext_losses(loaded), _maxtext_losses(fresh)
  np.testing.assert_allclose(loaded_losses, loaded_losses[0], rtol=1e-6)
  assert abs(loaded_losses[0] - fresh_losses[0]) > 0.05


def test_interrupted_checkpoint_write_is_not_trusted(tmp_path, teacher_checkpoint):
  """A step directory left half-written (Orbax's temporary name) is ignored: the run resumes from the last commit."""
  common = ("steps=4", "checkpoint_period=2", "log_period=1", "distill_alpha=0.3")
  reference = train_in_process(tmp_path / "ref", teacher_checkpoint, *common, run_name="r").history
  first = train_in_process(tmp_path / "run", teacher_checkpoint, *common, run_name="r")
  checkpoints = tmp_path / "run" / "r" / "checkpoints"
  assert committed_steps(checkpoints) == [0, 2, 3]
  # As if the process died while writing step 3: Orbax writes under a temporary name and renames on commit.
  (checkpoints / "3").rename(checkpoints / "3.orbax-checkpoint-tmp-1700000000")
  del first
  resumed = train_in_process(tmp_path / "run", teacher_checkpoint, *common, run_name="r").history
  resumed_steps = sorted(h["step"] for h in resumed if "distill/total_loss" in h)
  assert resumed_steps == [4]  # step 3 (logged as 4) is recomputed from the committed step 2
  ref = {h["step"]: h for h in reference if "distill/total_loss" in h}
  got = {h["step"]: h for h in resumed if "distill/total_loss" in h}
  np.testing.assert_allclose(got[4]["distill/total_loss"], ref[4]["distill/total_loss"], rtol=1e-6)


def test_rerunning_a_finished_run_is_a_clean_no_op(tmp_path, teacher_checkpoint):
  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

  argv = [
      "p",
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      "run_name=done",
      "steps=2",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
  ]
  assert trainer.run(config.build(argv)) == 0
  assert trainer.run(config.build(argv)) == 0
  assert committed_steps(tmp_path / "done" / "checkpoints") == [0, 1]
