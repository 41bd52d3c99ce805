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

"""The documented command on tiny versions of the model families MaxText ships, with a feature loss.

Per family, MaxText's own pre-training trains one tiny model 3 steps and keeps
checkpoints 0 and 2; checkpoint 2 is the teacher and checkpoint 0 the student's
starting point (same architecture, different weights). Two distillation steps
with ``distill_beta = 1`` then must give finite losses and a positive feature
loss; for MoE families the logged ``distill/moe_lb_loss`` of step 1 (computed on
the student's starting weights and the first batch) must equal MaxText's own
load-balance term, from MaxText's ``loss_fn``, for the same weights and batch.

DeepSeek keeps its shipped ``routed_bias: true``; its pre-training moves the
router bias (``routed_bias_update_rate``), which MaxText stores outside
``params`` (``nnx_aux``). The default case runs it end to end (before the fix:
"gate/bias: missing" loading the student, then a deleted teacher array); with
``--families`` the teacher and the student must also start from the stored
bias, and the student's own checkpoint must keep it and load again through
``load_parameters_path``.

The default suite runs the MLA family (deepseek3, whose tiny config has dense and
MoE layer groups, so it covers MoE routing and load balance too); dense decoders
are covered by the rest of the suite.
All ten run with ``make test-families`` (marker ``families``), with every other
decoder block in ``decoder_blocks_test.py``.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, TINY_YAML, maxtext_base_yml, read_metrics, run_cli, subprocess_env

RTOL = 1e-5
TINY = {
    "base_emb_dim": "64",
    "base_num_query_heads": "4",
    "base_num_kv_heads": "2",
    "head_dim": "16",
    "base_mlp_dim": "128",
    "vocab_size": "512",
}
MOE = {
    "num_experts": "4",
    "num_experts_per_tok": "2",
    "base_moe_mlp_dim": "128",
    "sparse_matmul": "False",
    "capacity_factor": "-1",
    "load_balance_loss_weight": "0.01",
}
# DeepSeek as shipped: routed_bias true (from the model file).
DEEPSEEK = {
    "model_name": "deepseek3-tiny",
    "base_num_kv_heads": "4",
    "base_num_decoder_layers": "3",
    "first_num_dense_layers": "1",
    "qk_nope_head_dim": "16",
    "qk_rope_head_dim": "8",
    "v_head_dim": "16",
    **MOE,
}
# Pre-training only: MaxText moves the router bias, so the checkpoints hold a bias that is not its zero init. The
# plugin does not apply these updates (it refuses routed_bias_update_rate > 0), so distillation runs with 0.
PRETRAIN_ONLY = {"deepseek3": {"routed_bias_update_rate": "0.01"}}
ROUTER_BIAS = ("decoder", "moe_layers", "DeepSeekMoeBlock_0", "MoeBlock_0", "gate", "bias")
FAMILIES = {
    "llama3.1": {"model_name": "llama3.1-8b", "base_num_decoder_layers": "2"},
    "mistral": {"model_name": "mistral-7b", "base_num_decoder_layers": "2"},
    "gemma": {"model_name": "gemma-2b", "base_num_decoder_layers": "2"},
    "gemma2": {"model_name": "gemma2-2b", "base_num_decoder_layers": "2"},
    # One local/global cycle of 6 plus one remainder layer: the feature layers span both groups.
    "gemma3": {"model_name": "gemma3-4b", "base_num_decoder_layers": "7", "distill_layer_indices": "[0,5,6]"},
    "qwen3": {"model_name": "qwen3-0.6b", "base_num_decoder_layers": "2"},
    "mixtral": {"model_name": "mixtral-8x7b", "base_num_decoder_layers": "2", **MOE},
    "qwen3-30b-a3b": {"model_name": "qwen3-30b-a3b", "base_num_decoder_layers": "2", **MOE},
    # Two cycles of gpt-oss's two-layer pattern: depth order interleaves the cycle's sub-layers.
    "gpt-oss-20b": {"model_name": "gpt-oss-20b", "base_num_decoder_layers": "4", "distill_layer_indices": "[1,2]", **MOE},
    "deepseek3": {**DEEPSEEK, "distill_layer_indices": "[0,2]"},
}
DEFAULT = ("deepseek3",)
# MaxText's pre-training run keys (learning rate high enough to move): checkpoints 0 and 2.
PRETRAIN_RUN = {
    "hardware": "cpu",
    "skip_jax_distributed_system": "True",
    "attention": "dot_product",
    "dtype": "float32",
    "weight_dtype": "float32",
    "jax_cache_dir": "",
    "override_model_config": "True",
    "dataset_type": "synthetic",
    "max_target_length": "32",
    "per_device_batch_size": "2",
    "enable_checkpointing": "True",
    "async_checkpointing": "False",
    "steps": "3",
    "checkpoint_period": "2",
    "learning_rate": "0.01",
    "warmup_steps_fraction": "0",
}
PRETRAIN_ARGS = [f"{k}={v}" for k, v in PRETRAIN_RUN.items()]
RUN_LEVEL = ("distill_layer_indices",)  # distill_* keys: top level only, never in teacher_overrides


def _model_args(family: str) -> dict:
  return {**TINY, **{k: v for k, v in FAMILIES[family].items() if k not in RUN_LEVEL}}


def _pretrain(out, family: str):
  """MaxText's own pre-training of the tiny family model: checkpoints 0 and 2."""
  args = {**PRETRAIN_RUN, **_model_args(family), **PRETRAIN_ONLY.get(family, {})}
  cmd = [sys.executable, "-m", "maxtext.trainers.pre_train.train", maxtext_base_yml(), "run_name=pt"]
  cmd += [f"base_output_directory={out}"] + [f"{k}={v}" for k, v in args.items()]
  proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out / "pt" / "checkpoints"


def _distill_argv(tmp_path, family: str, checkpoints) -> list[str]:
  """The documented command's arguments: the model keys for the student (plain) and the teacher (teacher_overrides)."""
  model = _model_args(family)
  layers = model["base_num_decoder_layers"]
  argv = [TINY_YAML, "run_name=family", f"base_output_directory={tmp_path / 'out'}"]
  argv += [f"{k}={v}" for k, v in model.items()] + [f"teacher_overrides.{k}={v}" for k, v in model.items()]
  argv += [f"{k}={FAMILIES[family][k]}" for k in RUN_LEVEL if k in FAMILIES[family]]
  argv += [
      f"student_overrides.base_num_decoder_layers={layers}",
      f"teacher_overrides.load_parameters_path={checkpoints / '2' / 'items'}",
      f"load_parameters_path={checkpoints / '0' / 'items'}",
      "distill_beta=1.0",
      "steps=2",
      "enable_checkpointing=False",
      f"metrics_file={tmp_path / 'metrics.jsonl'}",
  ]
  return argv


def _maxtext_lb_loss(argv: list[str]) -> float:
  """MaxText's own load-balance term for the student's starting weights and the first synthetic batch."""
  from maxtext.input_pipeline import synthetic_data_processing  # pylint: disable=import-outside-toplevel
  from maxtext.trainers.pre_train import train  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.model import checkpoint_aux  # pylint: disable=import-outside-toplevel

  student = config.build(["train_distill", *argv]).student
  mesh = maxtext_utils.get_mesh_from_config(student)
  with jax.set_mesh(mesh):
    model = model_creation_utils.from_pretrained(student, mesh=mesh)
    # MaxText's loader reads `params` only; the router bias (nnx_aux) as the plugin restores it, checked against the
    # stored array in _check_router_bias.
    checkpoint_aux.restore_extras(model, student.load_parameters_path)
    batch = next(synthetic_data_processing.SyntheticDataIterator(student, mesh))
    _, aux = train.loss_fn(model, student, dict(batch), None, None, is_train=True)
  return float(aux["moe_lb_loss"])


def _stored(items, path: tuple) -> np.ndarray:
  """One array of a checkpoint, read back by Orbax alone (no MaxText, no plugin)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  tree = ocp.PyTreeCheckpointer().restore(str(items))
  for key in path:
    tree = tree[key]
  return np.asarray(tree)


def _teacher_bias(argv: list[str], teacher_items) -> np.ndarray:
  """The router bias of the teacher as the trainer builds it from ``teacher_items``."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

  argv = [a for a in argv if not a.startswith("teacher_overrides.load_parameters_path=")]
  teacher = config.build(["train_distill", *argv, f"teacher_overrides.load_parameters_path={teacher_items}"]).teacher
  mesh = maxtext_utils.get_mesh_from_config(teacher)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(teacher.logical_axis_rules):
    _, state = trainer.build_teacher(teacher, mesh)
  for key in ROUTER_BIAS:
    state = state[key]
  return np.asarray(state.get_value())


def _check_router_bias(tmp_path, argv: list[str], checkpoints) -> None:
  """The teacher starts from its stored bias; the student saves the bias it loaded, and that checkpoint loads again."""
  stored_teacher = _stored(checkpoints / "2" / "items", ("nnx_aux", "model", *ROUTER_BIAS))
  stored_student = _stored(checkpoints / "0" / "items", ("nnx_aux", "model", *ROUTER_BIAS))
  assert np.abs(stored_teacher).max() > 0.0 and not np.array_equal(stored_teacher, stored_student)
  np.testing.assert_array_equal(_teacher_bias(argv, checkpoints / "2" / "items"), stored_teacher)
  # The student was loaded from checkpoint 0 and the plugin never moves the bias: its final checkpoint holds it.
  saved = tmp_path / "out" / "family" / "checkpoints" / "1" / "items"
  np.testing.assert_array_equal(_stored(saved, ("nnx_aux", "model", *ROUTER_BIAS)), stored_student)
  np.testing.assert_array_equal(_teacher_bias(argv, saved), stored_student)


def _check_family(tmp_path, family: str, router_bias: bool = False):
  """``router_bias``: also save the student and check the router bias (:func:`_check_router_bias`)."""
  checkpoints = _pretrain(tmp_path / "pretrain", family)
  argv = _distill_argv(tmp_path, family, checkpoints)
  if router_bias:  # the student's checkpoint is read back below
    argv = [a for a in argv if a != "enable_checkpointing=False"] + ["enable_checkpointing=True"]
  proc = run_cli(*argv, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  logged = {r["step"]: r for r in read_metrics(tmp_path / "metrics.jsonl") if "distill/total_loss" in r}
  assert sorted(logged) == [1, 2]
  for record in logged.values():
    assert all(math.isfinite(v) for v in record.values() if isinstance(v, float)), record
    assert record["distill/out_proj_feature_loss"] > 0.0
  if "num_experts" in FAMILIES[family]:
    for record in logged.values():
      assert record["distill/moe_lb_loss"] > 0.0 and record["distill/teacher_moe_lb_loss"] > 0.0
    np.testing.assert_allclose(logged[1]["distill/moe_lb_loss"], _maxtext_lb_loss(argv), rtol=RTOL)
    if router_bias:
      _check_router_bias(tmp_path, argv, checkpoints)
  else:  # no experts: logged as 0, as MaxText's own trainer logs it
    assert logged[1]["distill/moe_lb_loss"] == 0.0 and logged[1]["distill/teacher_moe_lb_loss"] == 0.0


@pytest.mark.parametrize("family", DEFAULT)
def test_family_distills_with_features_and_maxtext_terms(tmp_path, family):
  _check_family(tmp_path, family)


@pytest.mark.families
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in DEFAULT])
def test_every_other_family(tmp_path, family):
  _check_family(tmp_path, family)


@pytest.mark.families
def test_deepseek_router_bias_is_restored_saved_and_reloaded(tmp_path):
  """The deepseek3 case with the student saved: the teacher's and the student's router bias against the stored arrays,
  and the student's checkpoint loaded again (the default case already runs routed_bias true end to end)."""
  _check_family(tmp_path, "deepseek3", router_bias=True)
