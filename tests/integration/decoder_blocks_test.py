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

"""Every decoder block MaxText 0.2.5 ships (``DecoderBlockType``), tiny, through the documented command.

Per block: MaxText's own pre-training makes the tiny teacher (checkpoint 2) and the
student's start (checkpoint 0); then

* the dense loss with the feature loss (``distill_beta=1``) where the block sows an
  attention ``out_projection`` in every layer, else ``distill_beta=1`` must be
  refused (exit 2 naming ``decoder_block``, before any model is built) and the
  dense loss runs with ``distill_beta=0``;
* the lean (chunked) loss on completion-only SFT chats with on-policy sampling
  (``distill_on_policy_fraction=1``), where sampling is supported, else the lean loss
  alone;

each with finite losses at both steps. Where MaxText itself fails (deepseek4,
qwen3_next, qwen3_5: its ``from_pretrained`` cannot build the model to load the
pre-trained checkpoint into), the test
asserts MaxText's error, so a MaxText that learns the block makes it fail and
be promoted.

Everything here is behind ``make test-families`` (marker ``families``): about
4 minutes a block on 2 cores.
"""

import dataclasses
import math
import subprocess
import sys

import pytest

from maxtext_distill_plugin.model import features
from tests.conftest import REPO, TINY_YAML, maxtext_base_yml, read_metrics, run_cli, subprocess_env
from tests.integration import data_testing
from tests.integration import model_family_test as family

_TINY, _MOE = family.TINY, family.MOE
_LENGTH, _NEW = 48, 12


@dataclasses.dataclass(frozen=True)
class Block:
  """A tiny model of one decoder block and what the plugin does with it.

  Attributes:
    model: model keys for MaxText's pre-training and for both models of the distillation.
    run: run-level keys of the distillation (``distill_layer_indices``).
    pretrain: keys for the pre-training only.
    feature_refusal: the key the refusal of ``distill_beta > 0`` names where the block sows but the tiny model cannot
      use it (``scan_layers``); blocks outside ``features.SOWING_DECODERS`` are refused naming ``decoder_block``.
    on_policy: whether on-policy sampling runs (else the lean run is off-policy).
    load_error: the error MaxText's ``from_pretrained`` fails with when the distillation loads the pre-trained
      teacher (before any step), or None.
  """

  model: dict
  run: dict = dataclasses.field(default_factory=dict)
  pretrain: dict = dataclasses.field(default_factory=dict)
  feature_refusal: str | None = None
  on_policy: bool = True
  load_error: str | None = None


def _tiny(**keys) -> dict:
  return {**_TINY, **{k: str(v) for k, v in keys.items()}}


_GEMMA4_TINY = {"global_head_dim": 16, "global_num_kv_heads": 2}
_GDN_TINY = {
    "gdn_key_head_dim": 16,
    "gdn_value_head_dim": 16,
    "gdn_num_key_heads": 2,
    "gdn_num_value_heads": 4,
    "gdn_chunk_size": 16,
    "base_num_decoder_layers": 4,
}

BLOCKS = {
    "default": Block(_tiny(decoder_block="default", base_num_decoder_layers=2)),
    "llama2": Block(_tiny(model_name="llama3.1-8b", base_num_decoder_layers=2)),
    "mistral": Block(_tiny(model_name="mistral-7b", base_num_decoder_layers=2)),
    "mixtral": Block(_tiny(model_name="mixtral-8x7b", base_num_decoder_layers=2, **_MOE)),
    "deepseek": Block(
        {**family.TINY, **family.DEEPSEEK},
        run={"distill_layer_indices": "[0,2]"},
        pretrain=family.PRETRAIN_ONLY["deepseek3"],
    ),
    "gemma": Block(_tiny(model_name="gemma-2b", base_num_decoder_layers=2)),
    "gemma2": Block(_tiny(model_name="gemma2-2b", base_num_decoder_layers=2)),
    "gemma3": Block(_tiny(model_name="gemma3-4b", base_num_decoder_layers=7), run={"distill_layer_indices": "[0,5,6]"}),
    "gemma4": Block(_tiny(model_name="gemma4-31b", base_num_decoder_layers=6, **_GEMMA4_TINY)),
    "gemma4_small": Block(
        _tiny(
            model_name="gemma4-e2b",
            base_num_decoder_layers=5,
            hidden_size_per_layer_input=16,
            vocab_size_per_layer_input=512,
            num_kv_shared_layers=0,
            scan_layers=False,  # MaxText: gemma4-e2b requires scan_layers=False
            **_GEMMA4_TINY,
        ),
        feature_refusal="scan_layers",  # the feature loss indexes the scan axis
    ),
    "qwen2": Block(_tiny(model_name="qwen2.5-1.5b", base_num_decoder_layers=2)),
    "qwen3": Block(_tiny(model_name="qwen3-0.6b", base_num_decoder_layers=2)),
    "qwen3_moe": Block(_tiny(model_name="qwen3-30b-a3b", base_num_decoder_layers=2, **_MOE)),
    "qwen3_custom_moe": Block(
        _tiny(
            model_name="qwen3-custom-30b-a3b",
            base_num_decoder_layers=2,
            attention_output_dim=64,
            moe_expert_input_dim=64,
            **_MOE,
        )
    ),
    "qwen3_next": Block(
        _tiny(model_name="qwen3-next-80b-a3b", **_GDN_TINY, **_MOE), load_error="duplicate entries for `fsdp_transpose`"
    ),
    "qwen3_5": Block(
        _tiny(model_name="qwen3.5-35b-a3b", use_mrope=False, **_GDN_TINY, **_MOE),
        load_error="duplicate entries for `fsdp_transpose`",
    ),
    "gpt3": Block(_tiny(model_name="gpt3-52k", base_num_decoder_layers=2, base_num_kv_heads=4)),
    "gpt_oss": Block(
        _tiny(model_name="gpt-oss-20b", base_num_decoder_layers=4, **_MOE), run={"distill_layer_indices": "[1,2]"}
    ),
    "simple": Block(_tiny(decoder_block="simple", base_num_decoder_layers=2)),
    "simple_mlp": Block(_tiny(decoder_block="simple_mlp", base_num_decoder_layers=2)),
    # MaxText routes Llama 4 top-1 only.
    "llama4": Block(_tiny(model_name="llama4-17b-16e", base_num_decoder_layers=4, **{**_MOE, "num_experts_per_tok": 1})),
    # One whole cycle of its 4-layer pattern (fewer layers fail in MaxText: 'NNXDecoder' object has no attribute
    # 'layers').
    "olmo3": Block(_tiny(model_name="olmo3-7b", base_num_decoder_layers=4)),
    "deepseek4": Block(
        _tiny(
            model_name="deepseek4-tiny",
            base_num_decoder_layers=4,
            base_num_kv_heads=1,  # its compressed KV is one head
            head_dim=32,
            qk_rope_head_dim=32,
            compress_ratios="[0,0,4,4]",
            use_indexer=False,
            routed_bias_update_rate=0.0,
            **_MOE,
        ),
        pretrain={"routed_bias_update_rate": "0.01"},
        load_error="Resource axis: o_groups",
    ),
    "envy": Block(_tiny(model_name="envy-test", base_num_decoder_layers=4, **_MOE)),
}


def _block_type_names() -> set[str]:
  from maxtext.common import common_types  # pylint: disable=import-outside-toplevel

  return {member.value for member in common_types.DecoderBlockType}


def test_the_matrix_names_every_decoder_block_maxtext_ships():
  """Cheap (no model): the table below covers MaxText's enum exactly, so a new block cannot go untested."""
  assert set(BLOCKS) == _block_type_names()


def test_every_block_sows_or_has_a_reason():
  """Cheap (config only): a block outside SOWING_DECODERS is refused with its own reason, never a generic one."""
  import types  # pylint: disable=import-outside-toplevel

  names = _block_type_names()
  assert features.SOWING_DECODERS | set(features.NOT_SOWING) == names
  assert not features.SOWING_DECODERS & set(features.NOT_SOWING)
  for name in names:
    reason = features.sow_refusal(types.SimpleNamespace(decoder_block=name))
    if name in features.SOWING_DECODERS:
      assert reason is None
    else:
      assert repr(name) in reason and features.NOT_SOWING[name] in reason


def test_sampling_recomputes_where_maxtext_decode_fails():
  """Cheap (config only): MLA, and the default block with grouped KV heads, sample by recompute (their KV-cache
  decode fails in MaxText 0.2.5; the lean runs above sample through it); other blocks use the KV cache."""
  import types  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.model import sampling  # pylint: disable=import-outside-toplevel

  def path(block, kv=4, attention_type="global"):
    config = types.SimpleNamespace(decoder_block=block, num_kv_heads=kv, num_query_heads=4, attention_type=attention_type)
    return sampling.decode_path(config)

  assert path("deepseek", attention_type="mla") == "recompute"
  assert path("default", kv=2) == "recompute"
  assert path("default") == path("qwen2", kv=2) == path("llama2", kv=2) == "kv_cache"


def _pretrain(out, block: Block) -> subprocess.CompletedProcess:
  args = [*family.PRETRAIN_ARGS, *(f"{k}={v}" for k, v in {**block.model, **block.pretrain}.items())]
  cmd = [sys.executable, "-m", "maxtext.trainers.pre_train.train", maxtext_base_yml(), "run_name=pt"]
  cmd += [f"base_output_directory={out}", *args]
  return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900, check=False)


def _sft_yaml(root) -> str:
  """Completion-only SFT chats with a locally trained tokenizer, on top of the tiny config."""
  chats = data_testing.chats(16)
  tokenizer = data_testing.train_hf_tokenizer(
      str(root / "tokenizer"), [m["content"] for c in chats for m in c] + ["user assistant"]
  )
  path = root / "sft.yml"
  lines = [
      f'base_config: "{TINY_YAML}"',
      "dataset_type: hf",
      "hf_path: json",
      f'hf_train_files: "{data_testing.write_chat_jsonl(str(root / "train.jsonl"), chats)}"',
      f'tokenizer_path: "{tokenizer}"',
      "tokenizer_type: huggingface",
      "use_sft: true",
      "sft_train_on_completion_only: true",
      "packing: false",
      "grain_worker_count: 0",
      "enable_data_shuffling: false",
      'train_data_columns: ["messages"]',
      f'chat_template: "{data_testing.CHAT_TEMPLATE}"',
  ]
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _argv(yaml: str, out, block: Block, checkpoints, *extra: str) -> list[str]:
  model = block.model
  argv = [yaml, "run_name=block", f"base_output_directory={out}", "steps=2", "enable_checkpointing=False"]
  argv += [f"{k}={v}" for k, v in model.items()] + [f"teacher_overrides.{k}={v}" for k, v in model.items()]
  argv += [f"student_overrides.base_num_decoder_layers={model['base_num_decoder_layers']}"]
  argv += [
      f"teacher_overrides.load_parameters_path={checkpoints / '2' / 'items'}",
      f"load_parameters_path={checkpoints / '0' / 'items'}",
      f"metrics_file={out / 'metrics.jsonl'}",
      *extra,
  ]
  return argv


def _finite_steps(out) -> list[dict]:
  logged = [r for r in read_metrics(out / "metrics.jsonl") if "distill/total_loss" in r]
  assert [r["step"] for r in logged] == [1, 2]
  for record in logged:
    assert all(math.isfinite(v) for v in record.values() if isinstance(v, float)), record
  return logged


def _check_block(tmp_path, name: str) -> None:
  block = BLOCKS[name]
  pretrained = _pretrain(tmp_path / "pretrain", block)
  assert pretrained.returncode == 0, pretrained.stderr[-3000:]
  _check_distillation(tmp_path, name, tmp_path / "pretrain" / "pt" / "checkpoints")


def _check_distillation(tmp_path, name: str, checkpoints) -> None:
  """The dense run (feature loss or its refusal) and the lean run (on-policy where supported) of one block."""
  block = BLOCKS[name]
  # Dense loss, with the feature loss where the block sows, else its refusal first.
  dense = tmp_path / "dense"
  run_keys = [f"{k}={v}" for k, v in block.run.items()]
  beta_one = _argv(TINY_YAML, dense, block, checkpoints, "distill_loss_impl=dense", "distill_beta=1.0", *run_keys)
  refusal = block.feature_refusal or (None if name in features.SOWING_DECODERS else "decoder_block")
  sows = refusal is None
  if not sows:
    refused = run_cli(*beta_one, timeout=300)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refusal in refused.stderr, refused.stderr[-3000:]
    assert "Compiling" not in refused.stderr and not (dense / "metrics.jsonl").exists()
  dense_argv = beta_one if sows else _argv(TINY_YAML, dense, block, checkpoints, "distill_loss_impl=dense")
  proc = run_cli(*dense_argv, timeout=900)
  if block.load_error is not None:
    assert proc.returncode != 0 and block.load_error in proc.stderr, proc.stderr[-4000:]
    return
  assert proc.returncode == 0, proc.stderr[-4000:]
  logged = _finite_steps(dense)
  if sows:
    assert all(r["distill/out_proj_feature_loss"] > 0.0 for r in logged)

  # Lean loss on SFT chats, sampling on-policy where the block supports it.
  lean = tmp_path / "lean"
  lean.mkdir()
  sampled = [
      "distill_on_policy_fraction=1.0",
      f"distill_sample_max_new_tokens={_NEW}",
      f"max_target_length={_LENGTH}",
  ]
  lean_argv = _argv(
      _sft_yaml(lean), lean, block, checkpoints, "distill_loss_impl=chunked", *(sampled if block.on_policy else [])
  )
  proc = run_cli(*lean_argv, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  logged = _finite_steps(lean)
  if block.on_policy:
    assert all(r["distill/on_policy_step"] == 1.0 and r["sample/completion_length"] >= 1.0 for r in logged), logged


@pytest.mark.families
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_decoder_block(tmp_path, name):
  _check_block(tmp_path, name)
