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

"""Each ``configs/post_train/distillation*.yml`` of the installed MaxText runs through the documented command.

Only CPU-size and local-file overrides go on the command line: the process environment (``hardware=cpu``, one
device, float32, dot-product attention instead of the TPU kernels, dense MoE matmuls instead of megablox), tiny
shapes for both models (``student_overrides.X=`` / ``teacher_overrides.X=``), two steps of batch 1 and length 32,
and local stand-ins for what a recipe would download (its dataset files and tokenizer: a 504-word Hugging Face
tokenizer made here, so the recipe's own ``tokenizer_type`` stays). Every loss, data-pipeline, freezing and
optimizer key of the recipe is kept. Teachers are the recipe's model family, made by MaxText's own pre-training.
"""

import json
import math
import pathlib
import random

import pytest

from tests.conftest import maxtext_pretrain, read_metrics, run_cli

_MOE = ("num_experts=4", "num_experts_per_tok=2", "base_moe_mlp_dim=128", "sparse_matmul=False", "capacity_factor=-1")
# model_name -> (tiny shape of both models, what the teacher's pre-training needs besides it)
_FAMILIES = {
    "llama3.1-8b": (("base_num_decoder_layers=2",), ()),
    "qwen3-30b-a3b-base": (("base_num_decoder_layers=2", *_MOE), ()),
    "gpt-oss-20b": (("base_num_decoder_layers=2", *_MOE), ()),
}
_SHAPE = ("base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16", "base_mlp_dim=128")
# Run-level keys (the teacher reads the student's batches and shares its process).
_CPU = (
    "hardware=cpu",
    "skip_jax_distributed_system=True",
    "jax_cache_dir=",
    "per_device_batch_size=1",
    "max_target_length=32",
    "steps=2",
    "log_period=1",
    "checkpoint_period=1000",
    "async_checkpointing=False",
    "grain_worker_count=1",
)
# Per-model keys, given to each model through its overrides (a recipe's student_overrides beat plain CLI keys, and
# plain CLI keys never reach the teacher).
_CPU_MODEL = (
    "override_model_config=True",
    "attention=dot_product",
    "dtype=float32",
    "weight_dtype=float32",
    "ici_fsdp_parallelism=1",
    "ici_data_parallelism=1",
)
# The feature loss of distillation_qwen3_30b_base*.yml aligns layers [0..7]; at 2 layers it aligns both.
_TWO_LAYERS = ("distill_layer_indices=[0,1]",)
# recipe -> (model family, dataset stand-in, whether its student starts from the teacher's weights, extra keys)
RECIPES = {
    "distillation.yml": ("llama3.1-8b", "hf_text", False, ()),
    "distillation-sft.yml": ("llama3.1-8b", "hf_sft", False, ()),
    "distillation-qwen3.yml": ("qwen3-30b-a3b-base", "grain", True, ()),
    "distillation_gpt_oss_20b.yml": ("gpt-oss-20b", "grain", False, ()),
    "distillation_qwen3_30b_base.yml": ("qwen3-30b-a3b-base", "grain", False, _TWO_LAYERS),
    "distillation_qwen3_30b_base_pdbs8.yml": ("qwen3-30b-a3b-base", "grain", False, _TWO_LAYERS),
}


def _recipe_dir() -> pathlib.Path:
  import maxtext  # pylint: disable=import-outside-toplevel

  return pathlib.Path(maxtext.__file__).parent / "configs" / "post_train"


def test_every_shipped_recipe_is_listed():
  assert sorted(p.name for p in _recipe_dir().glob("distillation*.yml")) == sorted(RECIPES)


@pytest.fixture(scope="module")
def local_data(tmp_path_factory):
  """A 504-word Hugging Face tokenizer, and 64 texts as ArrayRecord, JSON lines, and chat JSON lines."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline.protos import example_pb2  # pylint: disable=import-outside-toplevel
  from tokenizers import Tokenizer, models, pre_tokenizers  # pylint: disable=import-outside-toplevel
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel

  root = tmp_path_factory.mktemp("recipe_data")
  words = [f"w{i}" for i in range(500)]
  vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, **{w: i + 4 for i, w in enumerate(words)}}
  word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  word_level.pre_tokenizer = pre_tokenizers.Whitespace()
  PreTrainedTokenizerFast(
      tokenizer_object=word_level, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
  ).save_pretrained(root / "tokenizer")
  rng = random.Random(0)
  texts = [" ".join(rng.choice(words) for _ in range(48)) for _ in range(64)]
  writer = array_record_module.ArrayRecordWriter(str(root / "train.arrayrecord"), "group_size:1")
  for text in texts:
    example = example_pb2.Example()  # pylint: disable=no-member
    example.features.feature["text"].bytes_list.value.append(text.encode())
    writer.write(example.SerializeToString())
  writer.close()
  with open(root / "train.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
  with open(root / "chat.jsonl", "w", encoding="utf-8") as f:
    for t in texts:
      messages = [{"role": "user", "content": t[:100]}, {"role": "assistant", "content": t[100:]}]
      f.write(json.dumps({"messages": messages}) + "\n")
  return root


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
  """Built on first use: model_name -> items dir of a tiny teacher pre-trained one step by MaxText."""
  made: dict[str, str] = {}

  def get(model_name: str) -> str:
    if model_name not in made:
      out = tmp_path_factory.mktemp("teacher_" + model_name.replace(".", "_"))
      shape, extra = _FAMILIES[model_name]
      proc = maxtext_pretrain(out, "t", f"model_name={model_name}", *_SHAPE, *shape, *extra, "steps=1")
      assert proc.returncode == 0, proc.stderr[-3000:]
      made[model_name] = str(out / "t" / "checkpoints" / "0" / "items")
    return made[model_name]

  return get


def _data_args(kind: str, data: pathlib.Path) -> list[str]:
  tokenizer = f"tokenizer_path={data / 'tokenizer'}"
  if kind == "grain":
    return [f"grain_train_files={data / 'train.arrayrecord'}", tokenizer]
  files = data / ("train.jsonl" if kind == "hf_text" else "chat.jsonl")
  # Local JSON instead of the Hub dataset: datasets' json loader names its only split "train".
  return ["hf_path=json", f"hf_train_files={files}", "train_split=train", tokenizer]


def recipe_command(recipe: str, family: str, data_kind: str, data, teacher: str, out, *, student_from_teacher: bool):
  shape = [*_CPU_MODEL, *_SHAPE, *_FAMILIES[family][0], "vocab_size=512"]
  args = [str(_recipe_dir() / recipe), *_CPU, *_data_args(data_kind, data)]
  args += [f"{model}_overrides.{kv}" for kv in shape for model in ("student", "teacher")]
  args += [f"teacher_overrides.load_parameters_path={teacher}"]
  fresh = "''"  # an empty string: a bare `key=` would read as None
  args += [f"student_overrides.load_parameters_path={teacher if student_from_teacher else fresh}"]
  args += [f"base_output_directory={out}", "run_name=r", f"metrics_file={out / 'metrics.jsonl'}"]
  return args


# `make test` runs the plain, SFT and freezing (MoE, grain) recipes; the others add families and layer sets (--slow).
_DEFAULT_RECIPES = ("distillation.yml", "distillation-sft.yml")  # the others with --slow (the suite's budget)


@pytest.mark.parametrize(
    "recipe", [r if r in _DEFAULT_RECIPES else pytest.param(r, marks=pytest.mark.slow) for r in sorted(RECIPES)]
)
def test_upstream_recipe_runs_with_cpu_size_overrides(recipe, local_data, teachers, tmp_path):
  family, data_kind, from_teacher, extra = RECIPES[recipe]
  args = recipe_command(
      recipe, family, data_kind, local_data, teachers(family), tmp_path, student_from_teacher=from_teacher
  )
  args += list(extra)
  proc = run_cli(*args, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-4000:]
  records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "distill/total_loss" in r]
  assert [r["step"] for r in records] == [1, 2]
  for r in records:
    for name in ("distill/total_loss", "distill/soft_loss", "distill/hard_loss", "distill/teacher_loss"):
      assert math.isfinite(r[name]), (name, r)
    assert r["perf/per_device_tflops_student"] > 0 and r["perf/per_device_tflops_teacher"] > 0
  text = (_recipe_dir() / recipe).read_text(encoding="utf-8")
  if "load_balance_loss_weight" in text:  # MoE recipes: the student's load-balance term enters the objective
    assert all("distill/moe_lb_loss" in r and r["distill/moe_lb_loss"] > 0 for r in records)
  if "student_params_to_update" in text:
    assert 0 < records[-1]["params/trainable"] < records[-1]["params/total"]
  assert (tmp_path / "r" / "config.yml").is_file() and (tmp_path / "r" / "command.sh").is_file()
