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

"""On-policy distillation on the tiny models with local SFT chats: the documented command, the loss on the samples
against NumPy, the step's choice, resume, and the refusals."""

import math

from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin import cli, config, on_policy, trainer
from maxtext_distill_plugin import step as step_lib
from tests.conftest import TINY_YAML, read_metrics, run_cli
from tests.integration import data_testing

_LENGTH, _NEW = 48, 12  # every prompt of data_testing.chats fits the 36-token prompt bucket
_ON_POLICY = ["distill_on_policy_fraction=1.0", f"distill_sample_max_new_tokens={_NEW}", f"max_target_length={_LENGTH}"]


@pytest.fixture(scope="module")
def sft_yaml(tmp_path_factory) -> str:
  """A completion-only SFT config on local JSON-lines chats (train and held-out) with a locally trained tokenizer."""
  root = tmp_path_factory.mktemp("sft")
  train, held_out = data_testing.chats(40), data_testing.chats(8, seed=7)
  texts = [m["content"] for c in train + held_out for m in c] + ["user assistant"]
  tokenizer = data_testing.train_hf_tokenizer(str(root / "tokenizer"), texts)
  path = root / "sft.yml"
  path.write_text(
      "\n".join([
          f'base_config: "{TINY_YAML}"',
          "dataset_type: hf",
          "hf_path: json",
          f'hf_train_files: "{data_testing.write_chat_jsonl(str(root / "train.jsonl"), train)}"',
          f'hf_eval_files: "{data_testing.write_chat_jsonl(str(root / "eval.jsonl"), held_out)}"',
          f'tokenizer_path: "{tokenizer}"',
          "use_sft: true",
          "sft_train_on_completion_only: true",
          "packing: false",
          "grain_worker_count: 0",
          "enable_data_shuffling: false",
          'train_data_columns: ["messages"]',
          'eval_data_columns: ["messages"]',
          f'chat_template: "{data_testing.CHAT_TEMPLATE}"',
      ])
      + "\n"
  )
  return str(path)


def _argv(yaml, out, teacher_checkpoint, *overrides, run_name="run"):
  return [
      "train_distill",
      yaml,
      f"run_name={run_name}",
      f"base_output_directory={out}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      *overrides,
  ]


def _train(yaml, out, teacher_checkpoint, *overrides, run_name="run"):
  return trainer.train(config.build(_argv(yaml, out, teacher_checkpoint, *overrides, run_name=run_name)))


def _by_step(history):
  return {h["step"]: h for h in history if "distill/total_loss" in h}


def test_fraction_one_runs_the_documented_command_and_logs_the_sampling(tmp_path, sft_yaml, teacher_checkpoint):
  metrics = tmp_path / "metrics.jsonl"
  proc = run_cli(
      *_argv(sft_yaml, tmp_path, teacher_checkpoint, *_ON_POLICY, "steps=3", "eval_interval=3", "eval_steps=1")[1:],
      f"metrics_file={metrics}",
      "distill_divergence=reverse_kl",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = read_metrics(metrics)
  train = [r for r in records if "distill/total_loss" in r]
  assert [r["step"] for r in train] == [1, 2, 3]
  for r in train:
    assert r["distill/on_policy_fraction"] == 1.0 and r["distill/on_policy_step"] == 1.0
    assert 1.0 <= r["sample/completion_length"] <= _NEW
    assert 0.0 <= r["sample/eos_rate"] <= 1.0 and r["sample/prompt_truncated_rate"] == 0.0
    assert r["sample/tokens_per_second"] > 0 and r["perf/sample_seconds"] > 0 and r["perf/step_seconds"] > 0
    assert math.isfinite(r["distill/total_loss"])
  evals = [r for r in records if on_policy.NLL_METRIC in r]
  assert [r["step"] for r in evals] == [3]
  assert math.isfinite(evals[0][on_policy.NLL_METRIC]) and evals[0][on_policy.NLL_METRIC] > 0
