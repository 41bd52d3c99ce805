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

"""The README's main job: prune a pre-trained MaxText model and recover it by distillation, on a CPU.

  python -m maxtext_distill_plugin.demo [--output-dir demo_output] [--fast]

Nothing is downloaded; every stage uses MaxText's own machinery where it has one.

1. Data: the standard library's Python sources, a 1k-piece SentencePiece
   tokenizer trained on them, and pre-tokenized ArrayRecord files for MaxText's
   Grain pipeline; a stable hash of each path picks the held-out files
   (:mod:`demo_data`).
2. Teacher: ``configs/demo-model.yml`` (4 layers, width 128) pre-trained by
   MaxText's own ``maxtext.trainers.pre_train.train`` in a subprocess; reused
   on the next run when its data and settings have not changed.
3. Student: the teacher cut to layers ``KEEP_LAYERS`` (:mod:`pruning`).
4. Held-out cross-entropy of the teacher and the pruned student.
5. Online distillation with the spec's same-size pruning-recovery recipe,
   ``configs/demo-pruning-recovery.yml``, through :mod:`trainer`.
6. Held-out cross-entropy of the distilled student, then a table.

Every model is scored by the same code on the same batches: the first
``eval_steps`` batches of MaxText's eval iterator over the held-out split,
collected once. A unigram model of the training split's token counts scores
the same targets, as the floor any language model must beat.
"""

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging as std_logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings

from absl import logging
import numpy as np

from maxtext_distill_plugin import demo_data

MODEL_YAML = "demo-model.yml"
RECIPE_YAML = "demo-pruning-recovery.yml"
# First and last layer: of the 2-of-4 choices this one starts worst and recovers best (measured on this demo).
KEEP_LAYERS = (0, 3)
_STEP_LINE = re.compile(r"completed step: (\d+), seconds: ([\d.]+).*?\bloss: ([\d.]+)")


@dataclasses.dataclass(frozen=True)
class Plan:
  """How much work each stage does."""

  teacher_steps: int
  distill_steps: int
  eval_batches: int
  max_files: int | None


FULL = Plan(teacher_steps=700, distill_steps=400, eval_batches=16, max_files=None)
FAST = Plan(teacher_steps=12, distill_steps=6, eval_batches=2, max_files=40)


@dataclasses.dataclass
class Paths:
  """Where each stage writes, under one output directory."""

  root: str

  @property
  def data(self) -> str:
    return os.path.join(self.root, "data")

  @property
  def teacher_run(self) -> str:
    return os.path.join(self.root, "teacher")

  @property
  def pruned_items(self) -> str:
    return os.path.join(self.root, "pruned", "0", "items")

  @property
  def student_run(self) -> str:
    return os.path.join(self.root, "student")

  @property
  def results(self) -> str:
    return os.path.join(self.root, "results.json")


class StageTimer:
  """Wall-clock seconds per stage, in order."""

  def __init__(self):
    self.seconds: dict[str, float] = {}

  @contextlib.contextmanager
  def stage(self, name: str):
    print(f"[demo] {name} ...", flush=True)
    start = time.perf_counter()
    yield
    self.seconds[name] = time.perf_counter() - start
    print(f"[demo] {name}: {self.seconds[name]:.1f}s", flush=True)


def _yaml(name: str) -> str:
  from maxtext_distill_plugin import config  # pylint: disable=import-outside-toplevel

  return config.resolve_yaml(name)


def _file_sha(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def _latest_items(checkpoint_dir: str) -> str | None:
  """``<checkpoint_dir>/<largest step>/items``, or None when there is none."""
  if not os.path.isdir(checkpoint_dir):
    return None
  steps = [int(d) for d in os.listdir(checkpoint_dir) if d.isdigit()]
  items = [os.path.join(checkpoint_dir, str(s), "items") for s in sorted(steps, reverse=True)]
  return next((p for p in items if os.path.isdir(p)), None)


def _subprocess_env() -> dict:
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


# --- Teacher --------------------------------------------------------------------------------------


def _teacher_stamp(data: demo_data.DemoData, steps: int) -> dict:
  yamls = {name: _file_sha(_yaml(name)) for name in (MODEL_YAML,)}
  return {"data": data.fingerprint, "steps": steps, "yaml": yamls}


def _read_json(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def pretrain_command(paths: Paths, data: demo_data.DemoData, steps: int) -> list[str]:
  """MaxText's own pre-training of the teacher, as a command line."""
  return [
      sys.executable,
      "-m",
      "maxtext.trainers.pre_train.train",
      _yaml(MODEL_YAML),
      "run_name=teacher",
      f"base_output_directory={paths.root}",
      f"steps={steps}",
      f"log_period={max(1, min(100, steps))}",
      *data.maxtext_args(),
  ]


def _run_logged(cmd: list[str], log_path: str, total_steps: int) -> None:
  """Runs ``cmd``, writing all its output to ``log_path`` and echoing the loss seven times along the way."""
  echo_every = max(1, total_steps // 7)
  popen_args = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "env": _subprocess_env()}
  with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(cmd, **popen_args) as proc:
    log.write(" ".join(cmd) + "\n")
    for line in proc.stdout:
      log.write(line)
      match = _STEP_LINE.search(line)
      if match and (int(match.group(1)) + 1) % echo_every == 0:
        step, seconds, loss = int(match.group(1)) + 1, float(match.group(2)), float(match.group(3))
        print(f"  teacher step {step}/{total_steps}: train loss {loss:.3f} ({seconds:.2f}s/step)", flush=True)
    code = proc.wait()
  if code != 0:
    with open(log_path, encoding="utf-8") as f:
      tail = f.readlines()[-30:]
    raise RuntimeError(f"{cmd[2]} failed with exit code {code}; last lines of {log_path}:\n{''.join(tail)}")


def ensure_teacher(paths: Paths, data: demo_data.DemoData, steps: int) -> tuple[str, bool]:
  """The teacher's ``items`` directory, pre-training it unless a matching one exists; ``(path, reused)``."""
  stamp_path = os.path.join(paths.teacher_run, "demo-stamp.json")
  stamp = _teacher_stamp(data, steps)
  items = _latest_items(os.path.join(paths.teacher_run, "checkpoints"))
  if items and _read_json(stamp_path) == stamp:
    return items, True
  shutil.rmtree(paths.teacher_run, ignore_errors=True)
  os.makedirs(paths.teacher_run, exist_ok=True)
  _run_logged(pretrain_command(paths, data, steps), os.path.join(paths.root, "teacher-pretrain.log"), steps)
  items = _latest_items(os.path.join(paths.teacher_run, "checkpoints"))
  if items is None:
    raise RuntimeError(f"MaxText's pre-training wrote no checkpoint under {paths.teacher_run}.")
  with open(stamp_path, "w", encoding="utf-8") as f:
    json.dump(stamp, f)
  return items, False


# --- Configs and evaluation -----------------------------------------------------------------------


def recipe_argv(paths: Paths, data, teacher_items: str, student_items: str, plan: Plan) -> list[str]:
  """``config.build`` arguments of the distillation (the student loads ``student_items``)."""
  return [
      "demo",
      _yaml(RECIPE_YAML),
      "run_name=student",
      f"base_output_directory={paths.root}",
      f"steps={plan.distill_steps}",
      f"eval_steps={plan.eval_batches}",
      f"eval_interval={max(1, min(100, plan.distill_steps))}",
      f"log_period={max(1, min(50, plan.distill_steps))}",
      f"student_overrides.load_parameters_path={student_items}",
      f"teacher_overrides.load_parameters_path={teacher_items}",
      *data.maxtext_args(),
  ]


def build_configs(argv: list[str], data: demo_data.DemoData):
  from maxtext_distill_plugin import config  # pylint: disable=import-outside-toplevel

  configs = config.build(argv)
  for label, cfg in (("student", configs.student), ("teacher", configs.teacher)):
    if cfg is not None and cfg.vocab_size != data.vocab_size:  # offline runs have no teacher config
      raise ValueError(f"{label} vocab_size={cfg.vocab_size} but the tokenizer has {data.vocab_size} pieces.")
  return configs


def collect_eval_batches(cfg, count: int) -> list[dict]:
  """The first ``count`` batches of MaxText's eval iterator over the held-out split, on the host."""
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline import grain_data_processing  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  mesh = maxtext_utils.get_mesh_from_config(cfg)
  iterator = grain_data_processing.make_grain_eval_iterator(cfg, mesh, [jax.process_index()])
  batches = []
  for batch in iterator:
    batches.append(jax.device_get(batch))
    if len(batches) == count:
      break
  if len(batches) < count:
    raise ValueError(f"the held-out split gave {len(batches)} batches, fewer than the {count} asked for.")
  return batches


def _ce_sum(graphdef, state, batch):
  """Summed next-token cross-entropy over the valid targets of ``batch``, and their count."""
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin import losses  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import reductions  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import step  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.settings import DistillSettings  # pylint: disable=import-outside-toplevel

  model = nnx.merge(graphdef, state)
  logits, _ = step.forward(model, batch, settings=DistillSettings(), enable_dropout=False)
  return reductions.masked_sum_count(losses.cross_entropy(logits, batch["targets"]), step.token_mask(batch))


def held_out_cross_entropy(cfg, batches: list[dict]) -> float:
  """Token-mean cross-entropy (nats) of the model ``cfg.load_parameters_path`` on ``batches``."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel

  mesh = maxtext_utils.get_mesh_from_config(cfg)
  total = count = 0.0
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(cfg.logical_axis_rules):
    graphdef, state = nnx.split(model_creation_utils.from_pretrained(cfg, mesh=mesh))
    score = jax.jit(functools.partial(_ce_sum, graphdef))
    for batch in batches:
      loss_sum, tokens = jax.device_get(score(state, batch))
      total, count = total + float(loss_sum), count + float(tokens)
  return total / max(count, 1.0)


def unigram_cross_entropy(train_path: str, vocab_size: int, batches: list[dict]) -> float:
  """Cross-entropy of add-one-smoothed training-split token frequencies on the same targets."""
  counts = np.ones(vocab_size, np.float64)
  for ids in demo_data.read_array_record(train_path):
    counts += np.bincount(np.asarray(ids, np.int64), minlength=vocab_size)[:vocab_size]
  log_p = np.log(counts / counts.sum())
  total = count = 0.0
  for batch in batches:
    mask = np.asarray(batch["targets_segmentation"]) != 0
    total -= float(log_p[np.asarray(batch["targets"])[mask]].sum())
    count += float(mask.sum())
  return total / max(count, 1.0)


def _with_student(argv: list[str], items: str) -> list[str]:
  key = "student_overrides.load_parameters_path="
  return [a for a in argv if not a.startswith(key)] + [key + items]


# --- Report ---------------------------------------------------------------------------------------


def _row(name: str, layers, ce: float) -> str:
  return f"  {name:<34} {str(layers):>6} {ce:>10.3f} {math.exp(min(ce, 80.0)):>11.1f}"


def format_report(results: dict) -> str:
  """The table and the locations, as printed at the end."""
  ce = results["cross_entropy"]
  gap = ce["pruned_student"] - ce["teacher"]
  recovered = (ce["pruned_student"] - ce["distilled_student"]) / gap if gap > 0 else float("nan")
  lines = [
      "",
      (
          f"Held-out split: {results['eval_files']} standard-library files not used for training;"
          f" {results['eval_tokens']} target tokens ({results['eval_batches']} batches of MaxText's eval iterator)."
      ),
      f"  {'model':<34} {'layers':>6} {'CE (nats)':>10} {'perplexity':>11}",
      _row("unigram (training-split counts)", "-", ce["unigram"]),
      _row("teacher (MaxText pre-training)", results["teacher_layers"], ce["teacher"]),
      _row("pruned student, before", results["student_layers"], ce["pruned_student"]),
      _row("student after distillation", results["student_layers"], ce["distilled_student"]),
      (
          f"Distillation closed {100 * recovered:.0f}% of the teacher-student gap in {results['distill_steps']} steps"
          " (the trainer's own eval of the same batches: student CE"
          f" {results['trainer_eval'].get('eval/hard_loss', float('nan')):.3f}, teacher CE"
          f" {results['trainer_eval'].get('eval/teacher_loss', float('nan')):.3f})."
      ),
      "",
      f"Teacher checkpoint:          {results['paths']['teacher']}",
      f"Pruned student checkpoint:   {results['paths']['pruned']}",
      f"Distilled student:           {results['paths']['student']}",
      f"TensorBoard (both runs):     tensorboard --logdir {results['paths']['root']}",
      f"  distillation logs:         {results['paths']['tensorboard']}",
      f"  teacher pre-training logs: {results['paths']['teacher_tensorboard']}",
      f"Tokenizer:                   {results['paths']['tokenizer']}",
      "Stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in results["seconds"].items()),
  ]
  return "\n".join(lines)


# --- Stages ---------------------------------------------------------------------------------------


def prune_student(paths: Paths, teacher_items: str):
  """Writes the pruned student checkpoint afresh; returns the :class:`pruning.PruneReport`."""
  from maxtext_distill_plugin import pruning  # pylint: disable=import-outside-toplevel

  shutil.rmtree(os.path.dirname(os.path.dirname(paths.pruned_items)), ignore_errors=True)
  return pruning.prune_layers(teacher_items, paths.pruned_items, list(KEEP_LAYERS))


def evaluate_before(configs, data: demo_data.DemoData, batches: list[dict]) -> dict[str, float]:
  """Held-out CE of the unigram floor, the teacher and the pruned student."""
  ce = {
      "unigram": unigram_cross_entropy(data.train_pattern, data.vocab_size, batches),
      "teacher": held_out_cross_entropy(configs.teacher, batches),
      "pruned_student": held_out_cross_entropy(configs.student, batches),
  }
  print("  held-out CE: " + ", ".join(f"{k} {v:.3f}" for k, v in ce.items()), flush=True)
  return ce


def distill(paths: Paths, configs):
  """The online distillation run (a fresh one each time); returns the trainer's ``TrainResult``."""
  from maxtext_distill_plugin import trainer  # pylint: disable=import-outside-toplevel

  shutil.rmtree(paths.student_run, ignore_errors=True)
  return trainer.train(configs)


def evaluate_distilled(argv: list[str], data: demo_data.DemoData, trained, batches: list[dict]) -> tuple[str, float]:
  """Loads the distilled student's last checkpoint as MaxText would; returns ``(items dir, held-out CE)``."""
  student_items = _latest_items(trained.checkpoint_dir)
  if student_items is None:
    raise RuntimeError(f"the distillation wrote no checkpoint under {trained.checkpoint_dir}.")
  configs = build_configs(_with_student(argv, student_items), data)
  return student_items, held_out_cross_entropy(configs.student, batches)


# --- Main -----------------------------------------------------------------------------------------


def run(output_dir: str, plan: Plan) -> dict:
  """Runs every stage; returns (and writes to ``results.json``) the numbers and paths."""
  paths = Paths(os.path.abspath(output_dir))
  os.makedirs(paths.root, exist_ok=True)
  timer = StageTimer()
  with timer.stage("data"):
    data = demo_data.prepare(paths.data, chunk_tokens=_model_max_length(), max_files=plan.max_files)
  with timer.stage("teacher"):
    teacher_items, reused = ensure_teacher(paths, data, plan.teacher_steps)
    print(f"  teacher {'reused' if reused else 'pre-trained'}: {teacher_items}", flush=True)
  with timer.stage("prune"):
    report = prune_student(paths, teacher_items)
  with timer.stage("eval before"):
    argv = recipe_argv(paths, data, teacher_items, paths.pruned_items, plan)
    configs = build_configs(argv, data)
    batches = collect_eval_batches(configs.student, plan.eval_batches)
    ce = evaluate_before(configs, data, batches)
  with timer.stage("distill"):
    trained = distill(paths, configs)
  with timer.stage("eval after"):
    student_items, ce["distilled_student"] = evaluate_distilled(argv, data, trained, batches)
  evals = [h for h in trained.history if "eval/hard_loss" in h]
  results = {
      "cross_entropy": ce,
      "eval_files": data.stats["eval_files"],
      "eval_batches": len(batches),
      "eval_tokens": int(sum(int((np.asarray(b["targets_segmentation"]) != 0).sum()) for b in batches)),
      "teacher_layers": report.source_layers,
      "student_layers": len(report.kept_layers),
      "kept_layers": list(report.kept_layers),
      "distill_steps": trained.last_step + 1,
      "trainer_eval": evals[-1] if evals else {},
      "seconds": timer.seconds,
      "paths": {
          "root": paths.root,
          "teacher": teacher_items,
          "pruned": paths.pruned_items,
          "student": student_items,
          "tensorboard": trained.tensorboard_dir,
          "teacher_tensorboard": os.path.join(paths.teacher_run, "tensorboard"),
          "tokenizer": data.tokenizer_path,
      },
  }
  with open(paths.results, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  return results


def _model_max_length() -> int:
  import yaml  # pylint: disable=import-outside-toplevel

  with open(_yaml(MODEL_YAML), encoding="utf-8") as f:
    return int(yaml.safe_load(f)["max_target_length"])


_PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _PluginRecordsOnly(std_logging.Filter):
  """Lets through the plugin's own INFO lines (progress, evals) and anyone's errors; hides the hosts' chatter."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.ERROR or os.path.abspath(record.pathname).startswith(_PLUGIN_DIR)


def _quiet_host_logs() -> None:
  logging.set_verbosity(logging.INFO)
  logging.get_absl_logger().addFilter(_PluginRecordsOnly())
  warnings.filterwarnings("ignore", module=r"orbax\..*")


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m maxtext_distill_plugin.demo", description=__doc__.split("\n", maxsplit=1)[0]
  )
  parser.add_argument("--output-dir", default="demo_output", help="where every artifact goes (default: demo_output)")
  parser.add_argument("--fast", action="store_true", help="a few steps of each stage on a small corpus (smoke test)")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  _quiet_host_logs()
  started = time.perf_counter()
  results = run(args.output_dir, FAST if args.fast else FULL)
  print(format_report(results))
  print(f"Total: {time.perf_counter() - started:.0f}s. Numbers: {os.path.abspath(args.output_dir)}/results.json")
  return 0


if __name__ == "__main__":
  sys.exit(main())
