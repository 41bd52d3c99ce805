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

"""Preemption by SIGTERM, a stop on non-finite losses, and TensorBoard output with the spec's metric names."""

import pathlib
import re
import signal
import struct
import subprocess
import sys
import time

import pytest
from tensorboardX.proto import event_pb2

from tests.conftest import committed_steps
from tests.conftest import DOCUMENTED_MODULE, REPO, TINY_YAML, run_cli, subprocess_env, train_in_process

SPEC_METRICS = (
    "distill/soft_loss",
    "distill/hard_loss",
    "distill/teacher_loss",
    "distill/student_perplexity",
    "distill/kl_div_at_T",
    "distill/kl_div_T1",
    "distill/out_proj_feature_loss",
    "distill/total_loss",
    "distill/alpha",
    "distill/temperature",
    "distill/beta_feature",
    "learning_rate",
    "grad_norm",
    "perf/tokens_per_s",
    "perf/step_time_s",
)


def test_sigterm_checkpoints_and_exits_zero(tmp_path, teacher_checkpoint):
  cmd = [
      sys.executable,
      "-m",
      DOCUMENTED_MODULE,
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      "run_name=pre",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      "steps=1000000",
      "checkpoint_period=100000",
      "log_period=1000",
  ]
  log_path = tmp_path / "run.log"
  with open(log_path, "w", encoding="utf-8") as log:  # a file, not a pipe: a full pipe would stall the run
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        cmd, cwd=REPO, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
    )
    checkpoints = tmp_path / "pre" / "checkpoints"
    deadline = time.monotonic() + 300
    while not committed_steps(checkpoints) and time.monotonic() < deadline and proc.poll() is None:
      time.sleep(0.05)
    time.sleep(1.0)  # let it run some steps past the first checkpoint
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
  stderr = log_path.read_text(encoding="utf-8")
  assert proc.returncode == 0, stderr[-3000:]
  stop = re.search(r"Preempted: all 1 processes stop after step (\d+)", stderr)
  assert stop, stderr[-3000:]
  saved = committed_steps(checkpoints)
  assert saved == [0, int(stop.group(1))] and saved[1] > 0, (saved, stop.group(0))


@pytest.mark.parametrize("async_checkpointing", [False, True], ids=["sync-save", "async-save"])
def test_non_finite_loss_stops_naming_step_and_term_and_keeps_good_checkpoints(
    tmp_path, teacher_checkpoint, async_checkpointing
):
  """A checkpoint every step: every step before the first non-finite one is committed on disk (with async saves
  too, MaxText's default, whose last one is still in flight when the bad step is found) and that step is not."""
  proc = run_cli(
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      "run_name=nan",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      "steps=40",
      "checkpoint_period=1",
      "log_period=40",
      "learning_rate=1e12",
      "gradient_clipping_threshold=0",
      "warmup_steps_fraction=0",
      f"async_checkpointing={async_checkpointing}",
  )
  assert proc.returncode == 3, proc.stderr[-3000:]
  match = re.search(r"(distill/\w+|grad_norm|learning_rate) is (nan|inf|-inf) at step (\d+)", proc.stderr)
  assert match, proc.stderr[-3000:]
  bad_step = int(match.group(3))  # 1-based: the state after 0-based step bad_step - 1 is bad
  saved = committed_steps(tmp_path / "nan" / "checkpoints")
  assert bad_step >= 2 and saved == list(range(bad_step - 1)), (saved, bad_step)
  assert f"Last good checkpoint: {bad_step - 2}." in proc.stderr and "Fix:" in proc.stderr, proc.stderr[-3000:]


def _scalar_tags(event_dir):
  tags = set()
  for path in event_dir.rglob("events.out.tfevents.*"):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset : offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])  # pylint: disable=no-member
      offset += 12 + length + 4
      tags.update(v.tag for v in event.summary.value)
  return tags


def test_tensorboard_holds_every_spec_metric(tmp_path, teacher_checkpoint):
  result = train_in_process(tmp_path, teacher_checkpoint, "steps=2", run_name="tb")
  tags = _scalar_tags(tmp_path / "tb" / "tensorboard")
  missing = [m for m in SPEC_METRICS if m not in tags]
  assert not missing, (missing, sorted(tags))
  assert pathlib.Path(result.tensorboard_dir) == tmp_path / "tb" / "tensorboard", result.tensorboard_dir
