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

"""On-policy distillation scaled out on the CPU: a sharded 4-device mesh, and two JAX processes (gloo), sample the
same completions and log the same losses as one device (one process) on the same global batch.

Each run is a fresh interpreter (the device count and the process group are fixed at JAX's start) running this
module as a worker: the documented trainer, with every sampled batch the train step runs on (the global arrays)
written by process 0 to a directory, so the tests compare the samples themselves as well as the logged numbers.

Sampling keys are functions of (init_weights_seed, step) only, and a draw over a sharded [B, V] array is the draw
over the whole array (JAX's partitionable threefry), so with temperature > 0 the samples are sharding- and
process-independent as long as the rows sit at the same global positions.
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, read_metrics, subprocess_env

# The SFT chats, tokenizer and config of on_policy_test, as a fixture.
from tests.integration.on_policy_test import sft_yaml  # pylint: disable=unused-import

_WORKER = "tests.integration.on_policy_scale_test"
_NEW, _LENGTH = 12, 48  # as in on_policy_test: every prompt fits the 36-token prompt bucket
_COMMON = (
    "distill_on_policy_fraction=1.0",
    f"distill_sample_max_new_tokens={_NEW}",
    f"max_target_length={_LENGTH}",
    "steps=2",
    "enable_checkpointing=False",
)
_EVAL = ("eval_interval=2", "eval_steps=1")  # the student's greedy samples of a held-out batch, scored by the teacher
_LOSSES = ("distill/total_loss", "distill/soft_loss", "distill/hard_loss", "distill/teacher_loss", "grad_norm")
_SAMPLED = ("sample/completion_length", "sample/eos_rate", "sample/prompt_truncated_rate", "distill/on_policy_step")
_NLL = "eval/teacher_nll_of_student_samples"
_SAMPLING = ("distill_sample_temperature=1.0", "distill_sample_top_k=40", "distill_sample_top_p=0.9")


def _command(out: pathlib.Path, name: str, yaml: str, teacher_checkpoint: str, *extra: str) -> list[str]:
  (out / f"{name}-samples").mkdir()
  return [
      sys.executable,
      "-m",
      _WORKER,
      str(out / f"{name}-samples"),
      yaml,
      f"base_output_directory={out}",
      f"run_name={name}",
      f"metrics_file={out / f'{name}.jsonl'}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      *_COMMON,
      *extra,
  ]


def _env(devices: int, process_id: int | None = None, port: int | None = None) -> dict:
  env = subprocess_env()
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  if process_id is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
  return env


def _run(out, name, devices, yaml, teacher_checkpoint, *extra) -> str:
  proc = subprocess.run(
      _command(out, name, yaml, teacher_checkpoint, *extra),
      cwd=REPO,
      env=_env(devices),
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return name


def _results(out: pathlib.Path, name: str):
  """(train records by step, eval records by step, sampled batches by 0-based step) of run ``name``."""
  records = read_metrics(out / f"{name}.jsonl")
  train = {r["step"]: r for r in records if "distill/total_loss" in r}
  evals = {r["step"]: r for r in records if _NLL in r}
  samples = {}
  for path in sorted((out / f"{name}-samples").glob("step*.npz")):
    with np.load(path) as arrays:
      samples[int(path.stem[4:])] = {k: arrays[k] for k in arrays.files}
  return train, evals, samples


def _assert_same_run(got, want, rtol: float):
  """The sampled batches are equal token for token; the logged losses and sample statistics agree to ``rtol``."""
  (train, evals, samples), (want_train, want_evals, want_samples) = got, want
  assert sorted(want_samples) == sorted(samples) == [0, 1]
  for step, batch in want_samples.items():
    assert batch["targets_segmentation"].sum() > 0, f"step {step} scores no generated token"
    assert sorted(samples[step]) == sorted(batch)
    for key, value in batch.items():
      np.testing.assert_array_equal(samples[step][key], value, err_msg=f"step {step} {key}")
  assert sorted(want_train) == sorted(train) == [1, 2]
  for step, record in want_train.items():
    assert record["distill/on_policy_step"] == 1.0
    for name in _LOSSES + _SAMPLED:
      np.testing.assert_allclose(train[step][name], record[name], rtol=rtol, err_msg=f"{name} step {step}")
  assert sorted(evals) == sorted(want_evals)
  for step, record in want_evals.items():
    np.testing.assert_allclose(evals[step][_NLL], record[_NLL], rtol=rtol, err_msg=f"{_NLL} step {step}")


# The greedy run also evaluates: its eval samples greedily too, so it reuses the train sampler's program.
@pytest.mark.parametrize(
    "sampling,sharding",
    [
        pytest.param(
            ("distill_sample_temperature=0", *_EVAL), ("ici_fsdp_parallelism=4",), marks=pytest.mark.slow
        ),  # make test-slow
        (_SAMPLING, ("ici_data_parallelism=2", "ici_fsdp_parallelism=1", "ici_tensor_parallelism=2")),
    ],
    ids=["greedy-fsdp", "sampled-data-tensor"],
)
def test_sharded_mesh_samples_and_logs_what_one_device_does(tmp_path, sft_yaml, teacher_checkpoint, sampling, sharding):
  """Global batch of 4 rows: one device (4 rows) against 4 devices (1 row each), the train step and the sampler
  both sharded; greedy on an FSDP mesh, and temperature / top-k / top-p draws on a data x tensor mesh (heads and
  the KV cache split over devices)."""
  one = _run(tmp_path, "one", 1, sft_yaml, teacher_checkpoint, "per_device_batch_size=4", *sampling)
  four = _run(tmp_path, "four", 4, sft_yaml, teacher_checkpoint, "per_device_batch_size=1", *sampling, *sharding)
  want = _results(tmp_path, one)
  assert sorted(want[1]) == ([2] if _EVAL[0] in sampling else [])
  _assert_same_run(_results(tmp_path, four), want, rtol=2e-5)


@pytest.mark.slow  # about 2 minutes of process start-up and compiles: make test-slow
def test_two_processes_sample_and_log_what_one_process_logs(tmp_path, sft_yaml, teacher_checkpoint):
  """Two JAX processes of one device each against one process with two devices, on the same 2-row global batch
  (one row a device, so a row sits at the same global position in both: host h loads rows h, h + 2, ...).

  Greedy, so that the eval (greedy samples of held-out prompts, scored by the teacher) reuses the train sampler's
  program; the draws at temperature > 0 follow from the same global-array keys, checked on the mesh above."""
  import portpicker  # pylint: disable=import-outside-toplevel

  port = portpicker.pick_unused_port()
  extra = ("per_device_batch_size=1", "distill_sample_temperature=0", *_EVAL)
  procs = []
  for process_id in range(2):
    name = f"p{process_id}"
    log = open(tmp_path / f"{name}.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
    procs.append((
        subprocess.Popen(  # pylint: disable=consider-using-with
            _command(tmp_path, name, sft_yaml, teacher_checkpoint, *extra),
            cwd=REPO,
            env=_env(1, process_id, port),
            stdout=log,  # a file, not a pipe: a full pipe would stall the run
            stderr=subprocess.STDOUT,
        ),
        log,
    ))
  try:
    for proc, _ in procs:
      proc.wait(timeout=600)
  finally:
    for proc, log in procs:
      if proc.poll() is None:  # a hang: stop it so the test reports instead of waiting forever
        proc.kill()
        proc.wait()
      log.close()
  for process_id, (proc, _) in enumerate(procs):
    assert proc.returncode == 0, (tmp_path / f"p{process_id}.log").read_text(encoding="utf-8")[-3000:]
  assert "joined 2 JAX processes" in (tmp_path / "p1.log").read_text(encoding="utf-8")
  assert not (tmp_path / "p1.jsonl").exists(), "only process 0 writes metrics"
  assert not list((tmp_path / "p1-samples").iterdir()), "only process 0 writes the worker's samples"
  single = _run(tmp_path, "single", 2, sft_yaml, teacher_checkpoint, *extra)
  want = _results(tmp_path, single)
  assert sorted(want[1]) == [2]
  _assert_same_run(_results(tmp_path, "p0"), want, rtol=1e-6)


def _worker(samples_dir: str, argv: list[str]) -> None:
  """The documented trainer, writing each sampled batch (gathered from every process) from process 0."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin import cli  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.training import on_policy  # pylint: disable=import-outside-toplevel

  original = on_policy.OnPolicy.batch_for_step

  def recording(self, step, state, teacher_state, data_batch, **kwargs):
    batch, metrics = original(self, step, state, teacher_state, data_batch, **kwargs)
    arrays = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in batch.items()}
    if jax.process_index() == 0:
      np.savez(pathlib.Path(samples_dir) / f"step{step}.npz", **arrays)
    return batch, metrics

  on_policy.OnPolicy.batch_for_step = recording
  cli.main(["train_distill", *argv])


if __name__ == "__main__":
  _worker(sys.argv[1], sys.argv[2:])
