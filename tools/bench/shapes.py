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


"""The benchmark's shapes, and what each shape needs before any variant runs: a teacher and one shared YAML."""

import dataclasses
import os
import pathlib
import subprocess
import sys

from absl import logging

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "configs" / "distillation-cpu-tiny.yml"
VARIANTS = ("ours_dense", "ours_chunked", "upstream", "floor")
# Keys of the plugin's YAML that MaxText 0.2.5's own config refuses (upstream must read the same file).
PLUGIN_ONLY_YAML_KEYS = ("enable_nnx",)
MIB = 1 << 20


# --- Shapes and their YAML / teacher ---


@dataclasses.dataclass(frozen=True)
class Shape:
  """One benchmark configuration: model widths and the batch shape."""

  vocab: int
  seq: int
  batch: int = 1
  emb: int = 128
  heads: int = 4
  head_dim: int = 32
  mlp: int = 512
  teacher_layers: int = 2
  student_layers: int = 1

  @property
  def name(self) -> str:
    return f"v{self.vocab}_s{self.seq}_b{self.batch}_e{self.emb}"

  @property
  def model_key(self) -> str:
    """What the teacher checkpoint depends on (not the batch shape)."""
    return f"v{self.vocab}_e{self.emb}_h{self.heads}x{self.head_dim}_m{self.mlp}_l{self.teacher_layers}"

  def model_args(self) -> dict:
    return {
        "vocab_size": self.vocab,
        "base_emb_dim": self.emb,
        "base_num_query_heads": self.heads,
        "base_num_kv_heads": self.heads,
        "head_dim": self.head_dim,
        "base_mlp_dim": self.mlp,
    }


# All six combinations: about 12 min on 2 idle cores; vocab 131072, seq 1024 needs up to 20 GiB of RAM.
FULL_SHAPES = tuple(Shape(vocab=v, seq=s) for v in (1024, 32768, 131072) for s in (256, 1024))
# --quick: the model of tests/conftest.py (so its teacher checkpoint can be reused), compiled cheaply.
QUICK_SHAPE = Shape(vocab=512, seq=64, batch=2, emb=64, heads=4, head_dim=16, mlp=128)
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
CPU_ENV = {
    "hardware": "cpu",
    "skip_jax_distributed_system": True,
    "attention": "dot_product",
    "dtype": "float32",
    "weight_dtype": "float32",
    "jax_cache_dir": "",
    "override_model_config": True,
}


def maxtext_dir() -> pathlib.Path:
  import maxtext  # pylint: disable=import-outside-toplevel

  return pathlib.Path(maxtext.__file__).parent


def maxtext_base_yml() -> str:
  return str(maxtext_dir() / "configs" / "base.yml")


def child_env(xla_flags: str = "", checkout: pathlib.Path | None = None) -> dict:
  """Children import this checkout's plugin (or ``checkout``'s), not a copy installed in site-packages."""
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), xla_flags]))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout or REPO), env.get("PYTHONPATH")]))
  env.pop("MAXTEXT_DISTILL_USE_UPSTREAM", None)
  return env


def make_teacher(shape: Shape, work_dir: pathlib.Path) -> str:
  """Items dir of a teacher made by MaxText's own pre-training (one step); cached per model shape."""
  out = work_dir / "teachers" / shape.model_key
  items = out / "teacher" / "checkpoints" / "0" / "items"
  if items.is_dir():
    return str(items)
  args = {**CPU_ENV, **shape.model_args(), "base_num_decoder_layers": shape.teacher_layers}
  args.update(dataset_type="synthetic", max_target_length=16, per_device_batch_size=1, steps=1)
  args.update(enable_checkpointing=True, async_checkpointing=False, run_name="teacher", base_output_directory=str(out))
  cmd = [sys.executable, "-m", "maxtext.trainers.pre_train.train", maxtext_base_yml()]
  cmd += [f"{k}={v}" for k, v in args.items()]
  logging.info("Making teacher %s with MaxText pre-training", shape.model_key)
  out.mkdir(parents=True, exist_ok=True)
  with open(out / "pretrain.log", "w", encoding="utf-8") as log:
    proc = subprocess.run(cmd, cwd=out, env=child_env(), stdout=log, stderr=subprocess.STDOUT, check=False)
  if proc.returncode != 0 or not items.is_dir():
    raise RuntimeError(f"teacher pre-training failed (exit {proc.returncode}); see {out / 'pretrain.log'}")
  return str(items)


def write_yaml(shape: Shape, teacher_items: str, path: pathlib.Path) -> pathlib.Path:
  """The shared YAML: configs/distillation-cpu-tiny.yml resized to ``shape``, readable by both trainers."""
  import yaml  # pylint: disable=import-outside-toplevel

  with open(TINY_YAML, encoding="utf-8") as f:
    data = yaml.safe_load(f)
  for key in PLUGIN_ONLY_YAML_KEYS:
    data.pop(key, None)
  data.update(shape.model_args())
  data.update(
      base_num_decoder_layers=shape.teacher_layers,
      student_overrides={"base_num_decoder_layers": shape.student_layers},
      teacher_overrides={"base_num_decoder_layers": shape.teacher_layers, "load_parameters_path": teacher_items},
      max_target_length=shape.seq,
      per_device_batch_size=shape.batch,
      # MaxText 0.2.5's default resolves to a source-tree path absent from the wheel; upstream loads it for pad_id.
      tokenizer_path=str(maxtext_dir() / "assets" / "tokenizers" / "tokenizer.llama2"),
      # T != 1 keeps the temperature path honest in both trainers (at T = 1 XLA may merge the two softmaxes).
      distill_alpha=0.5,
      distill_temperature=2.0,
      distill_beta=0.0,
      enable_checkpointing=False,
      steps=1000,
      log_period=1000,
      eval_interval=-1,
  )
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"# Written by tools/bench_distill.py for shape {shape.name}; read by every variant.\n")
    yaml.safe_dump(data, f, sort_keys=False)
  return path
