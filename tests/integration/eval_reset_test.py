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

"""Every eval scores the same held-out batches: the eval iterator starts again at each eval, as in MaxText."""

import numpy as np

from maxtext_distill_plugin.demo import data as demo_data
from tests.conftest import TINY_YAML, read_metrics, run_cli, subprocess_env


def test_evals_at_different_steps_on_the_same_parameters_agree(tmp_path, teacher_checkpoint):
  """learning_rate=0 keeps the parameters fixed, so the evals after steps 2 and 4 must see the same two held-out
  (real, non-repeating Grain) batches and log the same loss; an iterator that drifted would score batches 3-4.

  Context parallelism on 2 devices makes MaxText wrap the eval iterator in its load-balancing reorder, which
  (unlike the bare Grain iterator) does not start again when iterated: only an explicit reset does.
  """
  env = subprocess_env()
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  data = demo_data.prepare(str(tmp_path / "data"), 32, vocab_size=512, max_files=8)
  proc = run_cli(
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      "run_name=evals",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"metrics_file={tmp_path / 'metrics.jsonl'}",
      *data.maxtext_args(),
      "grain_worker_count=0",  # in-process loading, as the demo does
      "grain_worker_count_eval=0",
      "steps=4",
      "eval_interval=2",
      "eval_steps=2",
      "learning_rate=0",
      "enable_checkpointing=False",
      "ici_context_parallelism=2",
      "ici_fsdp_parallelism=1",
      env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  evals = [h for h in read_metrics(tmp_path / "metrics.jsonl") if "eval/hard_loss" in h]
  assert [h["step"] for h in evals] == [2, 4], evals
  for name in ("eval/hard_loss", "eval/kl_div_T1", "eval/teacher_loss"):
    np.testing.assert_allclose(evals[1][name], evals[0][name], rtol=1e-6, err_msg=name)
