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

"""Preemption that every host agrees on: SIGTERM to one of two JAX processes (gloo on localhost) stops both."""

import re
import signal
import subprocess
import sys
import time

import portpicker
import pytest

from tests.conftest import DOCUMENTED_MODULE, REPO, TINY_YAML, committed_steps, subprocess_env

_STOPPED = re.compile(r"Preempted: all (\d+) processes stop after step (\d+)")


def _launch(tmp_path, teacher_checkpoint, tag: str, *extra: str):
  """Starts the two processes of one job; returns [(process, log path)]."""
  port = portpicker.pick_unused_port()
  procs = []
  for process_id in range(2):
    env = subprocess_env()
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
    log_path = tmp_path / f"{tag}-p{process_id}.log"
    with open(log_path, "w", encoding="utf-8") as log:  # a file, not a pipe: a full pipe would stall the run
      cmd = [sys.executable, "-m", DOCUMENTED_MODULE, TINY_YAML, f"base_output_directory={tmp_path}", "run_name=mh"]
      cmd += [f"teacher_overrides.load_parameters_path={teacher_checkpoint}", "log_period=1000", *extra]
      proc = subprocess.Popen(  # pylint: disable=consider-using-with
          cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
      )
      procs.append((proc, log_path))
  return procs


def _wait_all(procs, timeout: float) -> list[str]:
  """Waits for every process; kills the ones still running at the deadline (a hang). Returns the logs."""
  deadline = time.monotonic() + timeout
  for proc, _ in procs:
    try:
      proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
      pass
  hung = [i for i, (proc, _) in enumerate(procs) if proc.poll() is None]
  for i in hung:
    procs[i][0].kill()
    procs[i][0].wait()
  logs = [path.read_text(encoding="utf-8") for _, path in procs]
  assert not hung, f"processes {hung} still running {timeout:.0f}s later; p0 log:\n{logs[0][-2500:]}"
  return logs


def test_sigterm_to_one_process_stops_all_after_the_same_step_and_resumes(tmp_path, teacher_checkpoint):
  checkpoints = tmp_path / "mh" / "checkpoints"
  procs = _launch(tmp_path, teacher_checkpoint, "run", "steps=1000000", "checkpoint_period=100000")
  deadline = time.monotonic() + 300
  while not committed_steps(checkpoints) and time.monotonic() < deadline and all(p.poll() is None for p, _ in procs):
    time.sleep(0.05)
  time.sleep(2.0)  # some steps past the step-0 checkpoint
  procs[1][0].send_signal(signal.SIGTERM)  # one host only, as when a scheduler's notices arrive at different moments
  logs = _wait_all(procs, timeout=120)
  for i, (proc, _) in enumerate(procs):
    assert proc.returncode == 0, (i, logs[i][-3000:])
  stops = [_STOPPED.search(log) for log in logs]
  assert all(stops), [log[-2000:] for log in logs]
  assert {m.group(1) for m in stops} == {"2"}
  stop_step = int(stops[0].group(2))
  assert int(stops[1].group(2)) == stop_step, [m.group(0) for m in stops]
  assert committed_steps(checkpoints) == [0, stop_step], committed_steps(checkpoints)

  resumed = _launch(tmp_path, teacher_checkpoint, "resume", f"steps={stop_step + 3}", "checkpoint_period=100000")
  logs = _wait_all(resumed, timeout=300)
  for i, (proc, _) in enumerate(resumed):
    assert proc.returncode == 0, (i, logs[i][-3000:])
    assert f"Resumed from checkpoint: continuing at step {stop_step + 1} of {stop_step + 3}" in logs[i], logs[i][-3000:]
  assert committed_steps(checkpoints) == [0, stop_step, stop_step + 2], committed_steps(checkpoints)


@pytest.mark.parametrize("mode", ["jax-sync", "reduce"])
def test_preemption_flag_gives_every_process_the_same_stop_step(tmp_path, mode):
  """run_guard alone, no model: with JAX's preemption sync manager and with the fallback cross-process reduction."""
  address = f"127.0.0.1:{portpicker.pick_unused_port()}"
  procs = []
  for process_id in range(2):
    log_path = tmp_path / f"w{process_id}.log"
    with open(log_path, "w", encoding="utf-8") as log:
      cmd = [sys.executable, str(REPO / "tests" / "integration" / "preemption_worker.py"), address, str(process_id), mode]
      proc = subprocess.Popen(  # pylint: disable=consider-using-with
          cmd, cwd=REPO, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
      )
      procs.append((proc, log_path))
  deadline = time.monotonic() + 120
  while "step 20\n" not in procs[1][1].read_text(encoding="utf-8") and time.monotonic() < deadline:
    time.sleep(0.05)
  procs[1][0].send_signal(signal.SIGTERM)
  logs = _wait_all(procs, timeout=60)
  for i, (proc, _) in enumerate(procs):
    assert proc.returncode == 0, (i, logs[i][-3000:])
    assert f"mode {mode}\n" in logs[i], logs[i][-3000:]
  stops = [re.search(r"stopped after step (\d+)", log) for log in logs]
  assert all(stops), [log[-2000:] for log in logs]
  assert stops[0].group(1) == stops[1].group(1) and int(stops[0].group(1)) >= 20, [m.group(0) for m in stops]
