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

"""MaxText's HF pipeline on local files (json, parquet, arrow) and SFT chat data, through the plugin.

Data and tokenizer are made in tmp_path (tests/integration/data_testing.py); nothing is downloaded.
"""

import math

from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration import checkpoint_paths, config, data_sources
from maxtext_distill_plugin.model import features
from maxtext_distill_plugin.teachers import kinds
from maxtext_distill_plugin.training import student_objective
from tests.conftest import TINY_YAML, read_metrics, run_cli
from tests.integration import data_testing

_CHATS = 40
_FEATURE_ARGS = ["distill_beta=0.5", "distill_layer_indices=[0]", "distill_teacher_layer_indices=[1]"]


def _sft_yaml(tmp_path, *, completion_only: bool = True) -> str:
  conversations = data_testing.chats(_CHATS)
  train = data_testing.write_chat_jsonl(str(tmp_path / "chats.jsonl"), conversations)
  texts = [m["content"] for c in conversations for m in c] + ["user assistant"]
  tokenizer = data_testing.train_hf_tokenizer(str(tmp_path / "tokenizer"), texts)
  path = tmp_path / "sft.yml"
  path.write_text(
      "\n".join([
          f'base_config: "{TINY_YAML}"',
          "dataset_type: hf",
          "hf_path: json",
          f'hf_train_files: "{train}"',
          f'tokenizer_path: "{tokenizer}"',
          "use_sft: true",
          f"sft_train_on_completion_only: {str(completion_only).lower()}",
          "packing: false",
          'train_data_columns: ["messages"]',
          f'chat_template: "{data_testing.CHAT_TEMPLATE}"',  # YAML: the CLI would parse "{%" as a mapping
      ])
      + "\n"
  )
  return str(path)


def test_sft_chats_train_through_the_documented_command(tmp_path, teacher_checkpoint):
  """use_sft + completion-only + a chat template on a JSON-lines file, MaxText's default Grain worker count."""
  metrics = tmp_path / "metrics.jsonl"
  proc = run_cli(
      _sft_yaml(tmp_path),
      f"base_output_directory={tmp_path}",
      "run_name=sft",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"metrics_file={metrics}",
      "steps=3",
      *_FEATURE_ARGS,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [r for r in read_metrics(metrics) if "distill/total_loss" in r]
  assert [r["step"] for r in records] == [1, 2, 3]
  for record in records:
    for name in ("distill/total_loss", "distill/soft_loss", "distill/hard_loss", "distill/out_proj_feature_loss"):
      assert math.isfinite(record[name]) and record[name] > 0, (name, record)


def _reference_completion_mask(conversations, tokenizer, length: int) -> np.ndarray:
  """``[B, S]``: 1 where the label (the next token) is an assistant token, from the tokenizer alone.

  Labels equal to BOS or PAD never count (MaxText's target shift drops them in every pipeline).
  """
  mask = np.zeros((len(conversations), length), np.int32)
  for row, messages in enumerate(conversations):
    ids, is_completion = [], []
    for message in messages:
      piece = tokenizer.apply_chat_template([message], tokenize=False, chat_template=data_testing.CHAT_TEMPLATE)
      piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
      ids += piece_ids
      is_completion += [message["role"] == "assistant"] * len(piece_ids)
    for position in range(min(len(ids), length) - 1):  # the last kept token has no label after truncation
      label = ids[position + 1]
      if is_completion[position + 1] and label not in (tokenizer.pad_token_id, tokenizer.bos_token_id):
        mask[row, position] = 1
  return mask


def test_completion_only_prompt_tokens_carry_no_weight(tmp_path, teacher_checkpoint):
  """Every loss term and metric of a completion-only SFT batch is the token mean over completion labels only.

  The batch comes from MaxText's HF pipeline. Its loss mask must equal a reference built from the tokenizer; each
  metric must equal the sum, over the reference's completion positions, of the same metric evaluated on a one-token
  mask (a NumPy reduction of per-token values), for the dense and the chunked loss; prompt positions do carry
  non-zero per-token values, so dropping them is what makes the totals agree; and randomizing the labels under the
  prompt changes neither the metrics nor (dense loss) the gradient.
  """
  import transformers  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline import input_pipeline_interface  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  cfgs = config.build([
      "t",
      _sft_yaml(tmp_path),
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"base_output_directory={tmp_path}",
      "enable_data_shuffling=False",
      "grain_worker_count=0",
      *_FEATURE_ARGS,
  ])
  student_cfg, settings = cfgs.student, cfgs.settings
  features.ensure_out_projection_sow()
  mesh = maxtext_utils.get_mesh_from_config(student_cfg)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(student_cfg.logical_axis_rules):
    train_iterator, _ = input_pipeline_interface.create_data_iterator(student_cfg, mesh)
    batch = {k: jnp.asarray(v) for k, v in next(train_iterator).items()}
    student = model_creation_utils.from_pretrained(student_cfg, mesh=mesh)
    teacher_graphdef, teacher_state = nnx.split(model_creation_utils.from_pretrained(cfgs.teacher, mesh=mesh))
  rows, length = batch["inputs"].shape

  tokenizer = transformers.AutoTokenizer.from_pretrained(str(student_cfg.tokenizer_path))
  reference_mask = _reference_completion_mask(data_testing.chats(_CHATS)[:rows], tokenizer, length)
  pipeline_mask = np.asarray(batch["targets_segmentation"] != 0).astype(np.int32)
  np.testing.assert_array_equal(pipeline_mask, reference_mask)
  inside_sequence = np.asarray(batch["inputs_segmentation"] != 0)
  prompt_positions = np.argwhere(inside_sequence & (reference_mask == 0))
  assert reference_mask.sum() > 0 and len(prompt_positions) > 0

  weights = student_objective.scheduled_weights(settings, 0, int(student_cfg.steps))
  model_graphdef, params, rest = nnx.split(student, nnx.Param, ...)

  def objective_and_metrics(p, batch, chunked):
    model = nnx.merge(model_graphdef, p, rest)
    teacher = kinds.FrozenModel(teacher_graphdef, settings).head(teacher_state, batch, lean=chunked)
    total, count, metrics = student_objective.student_terms(
        model, teacher, batch, weights, settings, chunked=chunked, enable_dropout=False
    )
    return total, (count, metrics)

  evaluate = jax.jit(objective_and_metrics, static_argnums=2)
  gradient = jax.jit(jax.grad(objective_and_metrics, has_aux=True), static_argnums=2)

  # One evaluation per one-token mask; vmap over the masks leaves the forward passes (mask-free) unbatched.
  positions = np.argwhere(inside_sequence)
  one_hots = np.zeros((len(positions), rows, length), np.int32)
  one_hots[np.arange(len(positions)), positions[:, 0], positions[:, 1]] = 1

  def per_mask(mask, chunked):
    total, (_, metrics) = objective_and_metrics(params, {**batch, "targets_segmentation": mask}, chunked)
    return total, {name: pair[0] for name, pair in metrics.items()}

  evaluate_per_mask = jax.jit(jax.vmap(per_mask, in_axes=(0, None)), static_argnums=1)

  rng = np.random.default_rng(0)
  scrambled_labels = np.where(reference_mask == 0, rng.integers(4, 300, (rows, length)), np.asarray(batch["targets"]))
  scrambled = {**batch, "targets": jnp.asarray(scrambled_labels, jnp.int32)}
  for chunked in (False, True):
    total, (count, metrics) = evaluate(params, batch, chunked)
    assert float(count) == reference_mask.sum()
    one_totals, one_metrics = jax.device_get(evaluate_per_mask(jnp.asarray(one_hots), chunked))
    per_position = {
        (int(b), int(s)): {"objective": float(one_totals[i]), **{k: float(v[i]) for k, v in one_metrics.items()}}
        for i, (b, s) in enumerate(positions)
    }
    names = ["objective"] + sorted(metrics)
    values = {"objective": float(total), **{k: float(v[0]) for k, v in metrics.items()}}
    for name in names:
      reference = np.sum([per_position[(int(b), int(s))][name] for b, s in np.argwhere(reference_mask)], dtype=np.float64)
      np.testing.assert_allclose(values[name], reference, rtol=2e-5, atol=1e-5, err_msg=f"{name} chunked={chunked}")
    for name in ("objective", "distill/soft_loss", "distill/hard_loss", "distill/out_proj_feature_loss"):
      assert max(abs(per_position[(int(b), int(s))][name]) for b, s in prompt_positions) > 1e-3, name
    scrambled_total, (_, scrambled_metrics) = evaluate(params, scrambled, chunked)
    assert float(scrambled_total) == float(total)
    assert {k: float(v[0]) for k, v in scrambled_metrics.items()} == {k: float(v[0]) for k, v in metrics.items()}
  # The gradient ignores the prompt labels as well (dense path; compiling the chunked one's VJP costs ~20 s more).
  grads, _ = gradient(params, batch, False)
  scrambled_grads, _ = gradient(params, scrambled, False)
  jax.tree.map(np.testing.assert_array_equal, grads, scrambled_grads)


def _hf_config(tmp_path, *overrides):
  """The student config of a run on dataset_type=hf (the checks run inside config.build)."""
  return config.build([
      "t",
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      "teacher_overrides.load_parameters_path=unused",
      "dataset_type=hf",
      *overrides,
  ]).student


def _first_batches(cfg, count: int) -> list[dict]:
  from maxtext.input_pipeline import input_pipeline_interface  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  mesh = maxtext_utils.get_mesh_from_config(cfg)
  with jax.set_mesh(mesh):
    iterator, _ = input_pipeline_interface.create_data_iterator(cfg, mesh)
    return [{k: np.asarray(v) for k, v in next(iterator).items()} for _ in range(count)]


def test_json_parquet_and_arrow_files_give_the_tokenizers_batches(tmp_path, monkeypatch):
  """The same texts as json, parquet and arrow files: identical batches, the tokenizer's ids in file order."""
  import datasets  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  # The teacher is never built here.
  monkeypatch.setattr(checkpoint_paths, "check_path", lambda key, path, plan=False: None)
  texts = data_testing.sentences(12)
  tokenizer_dir = data_testing.train_hf_tokenizer(str(tmp_path / "tokenizer"), texts)
  json_file = data_testing.write_text_jsonl(str(tmp_path / "train.jsonl"), texts)
  table = datasets.Dataset.from_dict({"text": texts})
  table.to_parquet(str(tmp_path / "train.parquet"))
  (tmp_path / "arrow").mkdir()
  table.save_to_disk(str(tmp_path / "arrow"))
  arrow_file = next(str(p) for p in (tmp_path / "arrow").glob("*.arrow"))
  common = [f"tokenizer_path={tokenizer_dir}", "packing=False", "enable_data_shuffling=False", "grain_worker_count=0"]
  batches = {
      kind: _first_batches(_hf_config(tmp_path, f"hf_path={kind}", f"hf_train_files={path}", *common), 2)
      for kind, path in (("json", json_file), ("parquet", str(tmp_path / "train.parquet")), ("arrow", arrow_file))
  }
  tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  rows = batches["json"][0]["inputs"].shape[0]
  for index, batch in enumerate(batches["json"]):
    for row in range(rows):
      # add_bos/add_eos (MaxText's defaults) frame the text; truncation to max_target_length keeps both.
      body = tokenizer(texts[index * rows + row], add_special_tokens=False)["input_ids"][: 32 - 2]
      ids = [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
      np.testing.assert_array_equal(batch["inputs"][row, : len(ids)], ids)
      assert (batch["inputs"][row, len(ids) :] == tokenizer.pad_token_id).all()
  for kind in ("parquet", "arrow"):
    for got, want in zip(batches[kind], batches["json"]):
      assert sorted(got) == sorted(want)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{kind} {key}")


def _refusal(tmp_path, *overrides) -> errors.ConfigError:
  with pytest.raises(errors.ConfigError) as error:
    _hf_config(tmp_path, *overrides)
  return error.value


def test_hf_keys_that_would_download_or_fail_late_are_refused(tmp_path, monkeypatch):
  import maxtext  # pylint: disable=import-outside-toplevel

  monkeypatch.setattr(checkpoint_paths, "check_path", lambda key, path, plan=False: None)
  texts = data_testing.sentences(4)
  tokenizer = data_testing.train_hf_tokenizer(str(tmp_path / "tokenizer"), texts)
  train = data_testing.write_text_jsonl(str(tmp_path / "train.jsonl"), texts)
  local = ["hf_path=json", f"hf_train_files={train}", f"tokenizer_path={tokenizer}"]
  assert _refusal(tmp_path, "hf_path=HuggingFaceH4/ultrachat_200k", f"tokenizer_path={tokenizer}").key == "hf_path"
  assert _refusal(tmp_path, "hf_path=json", f"tokenizer_path={tokenizer}").key == "hf_train_files"
  missing = _refusal(tmp_path, "hf_path=json", f"hf_train_files={tmp_path}/nope-*.jsonl", f"tokenizer_path={tokenizer}")
  assert missing.key == "hf_train_files" and "no file matches" in missing.fix
  assert _refusal(tmp_path, *local, "train_split=train_sft").key == "train_split"
  assert _refusal(tmp_path, *local, "eval_interval=2", "hf_eval_split=validation").key == "hf_eval_files"
  assert _refusal(tmp_path, *local[:2], "tokenizer_path=meta-llama/Llama-3.1-8B").key == "tokenizer_path"
  wheel_qwen3 = f"{maxtext.__path__[0]}/assets/tokenizers/qwen3-tokenizer"
  too_big = _refusal(tmp_path, *local[:2], f"tokenizer_path={wheel_qwen3}")
  assert too_big.key == "vocab_size" and "151" in too_big.fix
  assert _refusal(tmp_path, *local, "use_sft=True", "train_data_columns=['text']").key == "chat_template"
  monkeypatch.setattr(data_sources.importlib.util, "find_spec", lambda name: None if name == "datasets" else True)
  no_package = _refusal(tmp_path, *local)
  assert no_package.key == "dataset_type" and f"pip install '{data_sources.DATASETS_PIN}'" in no_package.fix


@pytest.mark.parametrize("kind", ["tfds", "c4_mlperf"])
def test_tensorflow_pipelines_name_the_pip_install_without_tensorflow(kind, tmp_path, monkeypatch):
  monkeypatch.setattr(checkpoint_paths, "check_path", lambda key, path, plan=False: None)
  real_find_spec = data_sources.importlib.util.find_spec
  monkeypatch.setattr(
      data_sources.importlib.util,
      "find_spec",
      lambda name: None if name.startswith("tensorflow") else real_find_spec(name),  # as in the pinned set
  )
  refusal = _refusal(tmp_path, f"dataset_type={kind}", "packing=True")
  assert refusal.key == "dataset_type" and f"pip install {data_sources.TENSORFLOW_PINS}" in refusal.fix


def test_hub_dataset_is_refused_with_exit_2(tmp_path, teacher_checkpoint):
  proc = run_cli(
      TINY_YAML,
      f"base_output_directory={tmp_path}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      "dataset_type=hf",
      "hf_path=HuggingFaceH4/ultrachat_200k",
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "hf_path='HuggingFaceH4/ultrachat_200k' is invalid" in proc.stderr + proc.stdout
