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

"""Pruning-recovery study: SFT against the spec's distillation recipes, on held-out real text, on a CPU.

  .venv/bin/python tools/study_pruning_recovery.py [--output-dir demo_output] [--quick]

Built on the demo (:mod:`maxtext_distill_plugin.demo`): its standard-library
corpus and held-out split, its MaxText-pretrained 4-layer teacher (reused when
``<output-dir>/teacher`` matches) and its 2-layer pruned student (layers
``demo.KEEP_LAYERS``). From that one student, with the same data, steps, batch,
optimizer and seeds, it trains

  (a) SFT only (``configs/study-sft.yml``: alpha 0, beta 0);
  (b) logit KD with the spec's recovery schedules (``configs/study-logit-kd.yml``: alpha 0.9 -> 0.5, T 2 -> 1);
  (c) (b) plus the feature loss on the layers around the pruned region (``configs/study-pruning-recovery.yml``);
  (d) (b) from a cache of the teacher's top-k, written once per seed by ``save_top_k_teacher_logits``;
  (e) upstream MaxText's own ``train_distill`` on (b)'s YAML, where it runs at all;
  and ablations of (c) in the spec's priority order, as CLI overrides, while the time budget lasts,

then scores every checkpoint on the same held-out batches (CE, perplexity, KL at
T=1 to the teacher, top-1 agreement with the teacher, fraction of the
pruned-to-teacher CE gap recovered) and writes ``<output-dir>/study/results.json``,
``results.md`` and learning-curve PNGs (from each run's ``metrics_file``). ``docs/results.md`` is the
reading of one such run (``--plots-dir docs``).

Resumable: a finished run leaves ``result.json`` beside its checkpoints and is
skipped on the next invocation when its arguments and teacher are unchanged.
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
import shutil
import subprocess
import sys
import time
import warnings

from absl import logging
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
from maxtext_distill_plugin import config as config_lib
from maxtext_distill_plugin import demo
from maxtext_distill_plugin import demo_data

# pylint: enable=wrong-import-position

RECIPE_YAML = "study-pruning-recovery.yml"
LOGIT_KD_YAML = "study-logit-kd.yml"
STUDY_YAMLS = ("demo-model.yml", "demo-pruning-recovery.yml", RECIPE_YAML, "study-sft.yml", LOGIT_KD_YAML)


@dataclasses.dataclass(frozen=True)
class Arm:
  """One training recipe: a YAML plus CLI overrides."""

  name: str
  label: str
  yaml: str
  overrides: tuple[str, ...] = ()
  offline: bool = False  # trains from the cached teacher top-k of its seed


SFT = Arm("sft", "(a) SFT only: alpha 0, beta 0", "study-sft.yml")
LOGIT_KD = Arm("logit_kd", "(b) logit KD: alpha .9->.5, T 2->1", LOGIT_KD_YAML)
RECIPE = Arm("recipe", "(c) b + features: beta 1->.1, layers [0,1]<->[0,3]", RECIPE_YAML)
# The cache already holds the seed's shuffled batches in training order; replaying them unshuffled gives arm (d)
# exactly arm (b)'s data order, so (d) - (b) measures the top-k truncation alone.
OFFLINE = Arm(
    "offline_topk", "(d) b offline: cached teacher top-128", LOGIT_KD_YAML, ("enable_data_shuffling=False",), True
)
MAIN_ARMS = (SFT, LOGIT_KD, RECIPE, OFFLINE)
# Recipe (c) with one key changed, in the spec's ablation order; the budget decides how far down the list to go.
ABLATIONS = (
    Arm("alpha_end_0.3", "c, alpha_end 0.3", RECIPE_YAML, ("distill_alpha_end=0.3",)),
    Arm("alpha_end_0.7", "c, alpha_end 0.7", RECIPE_YAML, ("distill_alpha_end=0.7",)),
    Arm(
        "same_layer_numbers",
        "c, layers [0,1]<->[0,1] (same numbers)",
        RECIPE_YAML,
        ("distill_teacher_layer_indices=None",),
    ),
    Arm(
        "layers_0", "c, layers [0]<->[0]", RECIPE_YAML, ("distill_layer_indices=[0]", "distill_teacher_layer_indices=[0]")
    ),
    Arm(
        "layers_1", "c, layers [1]<->[3]", RECIPE_YAML, ("distill_layer_indices=[1]", "distill_teacher_layer_indices=[3]")
    ),
    Arm("beta_end_0.01", "c, beta_end 0.01", RECIPE_YAML, ("distill_beta_end=0.01",)),
    Arm("beta_end_0.5", "c, beta_end 0.5", RECIPE_YAML, ("distill_beta_end=0.5",)),
    Arm("temperature_4", "c, T 4->1", RECIPE_YAML, ("distill_temperature=4.0",)),
    Arm(
        "temperature_1",
        "c, T 1 (fixed)",
        RECIPE_YAML,
        ("distill_temperature=1.0", "distill_temperature_schedule=constant"),
    ),
    Arm("alpha_linear", "c, alpha schedule linear", RECIPE_YAML, ("distill_alpha_schedule=linear",)),
)


@dataclasses.dataclass(frozen=True)
class StudyPlan:
  """How much work the study does."""

  demo_plan: demo.Plan
  steps: int
  eval_interval: int
  seeds: tuple[int, ...]
  ablations: int
  budget_s: float
  upstream_timeout_s: int


FULL = StudyPlan(
    demo.FULL,
    steps=300,
    eval_interval=30,
    seeds=(0, 1, 2, 3, 4),
    ablations=len(ABLATIONS),
    budget_s=40 * 60,
    upstream_timeout_s=240,
)
QUICK = StudyPlan(demo.FAST, steps=6, eval_interval=3, seeds=(0,), ablations=0, budget_s=90, upstream_timeout_s=0)


# --- Inputs: data, teacher, pruned student (the demo's) ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What every arm starts from; ``fingerprint`` changes when the teacher, the pruning or a study YAML does."""

  data: demo_data.DemoData
  teacher_items: str
  pruned_items: str
  fingerprint: str
  cache_root: str  # one teacher top-k cache per seed below it, for the offline arm

  def cache_dir(self, seed: int) -> str:
    return os.path.join(self.cache_root, f"seed{seed}")


def _max_target_length() -> int:
  import yaml  # pylint: disable=import-outside-toplevel

  with open(config_lib.resolve_yaml(demo.MODEL_YAML), encoding="utf-8") as f:
    return int(yaml.safe_load(f)["max_target_length"])


def _sha(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _yaml_digest() -> str:
  texts = []
  for name in STUDY_YAMLS:
    with open(config_lib.resolve_yaml(name), encoding="utf-8") as f:
      texts.append(f.read())
  return _sha("\n".join(texts))


def prepare_inputs(root: str, study_dir: str, plan: StudyPlan) -> Inputs:
  """The demo's data and teacher under ``root`` (made or reused), and a fresh pruned copy of the teacher."""
  from maxtext_distill_plugin import pruning  # pylint: disable=import-outside-toplevel

  paths = demo.Paths(root)
  data = demo_data.prepare(paths.data, chunk_tokens=_max_target_length(), max_files=plan.demo_plan.max_files)
  teacher_items, reused = demo.ensure_teacher(paths, data, plan.demo_plan.teacher_steps)
  logging.info("Teacher %s: %s", "reused" if reused else "pre-trained", teacher_items)
  pruned_root = os.path.join(study_dir, "pruned")
  shutil.rmtree(pruned_root, ignore_errors=True)
  report = pruning.prune_layers(teacher_items, os.path.join(pruned_root, "0", "items"), list(demo.KEEP_LAYERS))
  with open(os.path.join(paths.teacher_run, "demo-stamp.json"), encoding="utf-8") as f:
    stamp = f.read()
  fingerprint = _sha(json.dumps([stamp, teacher_items, list(demo.KEEP_LAYERS), _yaml_digest()]))
  return Inputs(data, teacher_items, report.dst_items_dir, fingerprint, os.path.join(study_dir, "caches"))


def arm_argv(arm: Arm, inputs: Inputs, run_dir: str, plan: StudyPlan, seed: int, student_items: str) -> list[str]:
  """``config.build`` arguments of one arm and seed."""
  return [
      "study",
      config_lib.resolve_yaml(arm.yaml),
      f"run_name={os.path.basename(run_dir)}",
      f"base_output_directory={os.path.dirname(run_dir)}",
      f"steps={plan.steps}",
      f"eval_interval={plan.eval_interval}",
      f"eval_steps={plan.demo_plan.eval_batches}",
      f"log_period={plan.eval_interval}",
      f"data_shuffle_seed={seed}",
      f"metrics_file={os.path.join(run_dir, 'metrics.jsonl')}",
      f"student_overrides.load_parameters_path={student_items}",
      f"teacher_overrides.load_parameters_path={inputs.teacher_items}",
      *inputs.data.maxtext_args(),
      *arm.overrides,
      *([f"offline_data_dir={inputs.cache_dir(seed)}"] if arm.offline else []),
  ]


def ensure_cache(inputs: Inputs, plan: StudyPlan, seed: int) -> tuple[str, float]:
  """Writes the teacher's top-k cache of ``seed``'s training batches (the batches arm (b) sees).

  Returns:
    The cache's key (what it was made from) and the seconds it took to write.

  Reused when the teacher, the YAMLs, the seed and the step count are unchanged.
  """
  from maxtext_distill_plugin import save_top_k_teacher_logits as cache_tool  # pylint: disable=import-outside-toplevel

  cache_dir = inputs.cache_dir(seed)
  argv = arm_argv(LOGIT_KD, inputs, os.path.join(cache_dir, "unused"), plan, seed, inputs.pruned_items)
  key = _sha(json.dumps([argv, inputs.fingerprint]))
  stamp = os.path.join(cache_dir, "study-stamp.json")
  done = _read_json(stamp)
  if done and done.get("key") == key:
    return key, done["seconds"]
  shutil.rmtree(cache_dir, ignore_errors=True)
  os.makedirs(cache_dir)
  started = time.perf_counter()
  configs = demo.build_configs(argv + ["offline_data_dir="], inputs.data)
  cache_tool.generate(configs, cache_tool.resolve_top_k(cache_tool.ToolOptions(output_dir=cache_dir), configs))
  seconds = time.perf_counter() - started
  _write_json(stamp, {"key": key, "seconds": seconds})
  logging.info("Teacher top-k cache for seed %d: %s (%.0fs)", seed, cache_dir, seconds)
  return key, seconds


# --- Held-out evaluation ---------------------------------------------------------------------------


@contextlib.contextmanager
def _loaded(cfg):
  """``(graphdef, state)`` of the model ``cfg.load_parameters_path``, inside its mesh and sharding rules."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel

  mesh = maxtext_utils.get_mesh_from_config(cfg)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(cfg.logical_axis_rules):
    yield nnx.split(model_creation_utils.from_pretrained(cfg, mesh=mesh))


def _log_probs(graphdef, state, batch):
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin import losses  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import step  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.settings import DistillSettings  # pylint: disable=import-outside-toplevel

  logits, _ = step.forward(nnx.merge(graphdef, state), batch, settings=DistillSettings(), enable_dropout=False)
  return losses.log_softmax_at(logits, 1.0)


def _score_sums(graphdef, state, batch, teacher_logp_BxSxV):
  """(sum, count) of CE, KL(teacher || model) at T=1 and top-1 agreement over the valid targets of ``batch``."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin import losses  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import reductions  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import step  # pylint: disable=import-outside-toplevel

  logp = _log_probs(graphdef, state, batch)
  mask = step.token_mask(batch)
  agree = jnp.argmax(logp, axis=-1) == jnp.argmax(teacher_logp_BxSxV, axis=-1)
  return {
      "ce": reductions.masked_sum_count(losses.cross_entropy_from_log_probs(logp, batch["targets"]), mask),
      "kl_t1": reductions.masked_sum_count(losses.kl_from_log_probs(teacher_logp_BxSxV, logp), mask),
      "top1_agreement": reductions.masked_sum_count(agree, mask),
  }


class HeldOut:
  """The first batches of MaxText's eval iterator over the held-out split, and the teacher's log-probabilities."""

  def __init__(self, configs, count: int):
    import jax  # pylint: disable=import-outside-toplevel

    self.batches = demo.collect_eval_batches(configs.student, count)
    with _loaded(configs.teacher) as (graphdef, state):
      fn = jax.jit(functools.partial(_log_probs, graphdef))
      self.teacher_logp = [np.asarray(jax.device_get(fn(state, b))) for b in self.batches]
    self.tokens = int(sum(int((np.asarray(b["targets_segmentation"]) != 0).sum()) for b in self.batches))

  def teacher_scores(self) -> dict[str, float]:
    """The teacher's own held-out metrics, from its stored log-probabilities (KL 0, agreement 1 by definition)."""
    total = 0.0
    for batch, logp in zip(self.batches, self.teacher_logp):
      mask = np.asarray(batch["targets_segmentation"]) != 0
      target_logp = np.take_along_axis(logp, np.asarray(batch["targets"])[..., None], axis=-1)[..., 0]
      total -= float(target_logp[mask].sum())
    return _with_perplexity({"ce": total / max(self.tokens, 1), "kl_t1": 0.0, "top1_agreement": 1.0})

  def score(self, cfg) -> dict[str, float]:
    """Held-out metrics of the model ``cfg.load_parameters_path``."""
    import jax  # pylint: disable=import-outside-toplevel

    from maxtext_distill_plugin import reductions  # pylint: disable=import-outside-toplevel

    totals = None
    with _loaded(cfg) as (graphdef, state):
      fn = jax.jit(functools.partial(_score_sums, graphdef))
      for batch, teacher_logp in zip(self.batches, self.teacher_logp):
        sums = jax.device_get(fn(state, batch, teacher_logp))
        totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return _with_perplexity(reductions.means(totals))


def _with_perplexity(scores: dict[str, float]) -> dict[str, float]:
  return {**scores, "perplexity": math.exp(min(scores["ce"], 80.0))}


# --- Runs ------------------------------------------------------------------------------------------


def _read_json(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, value) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)


def read_curve(metrics_file: str) -> dict[str, list]:
  """The trainer's held-out evals (CE, KL at T=1) and training CE against the step, from a run's JSON lines."""
  names = {"eval_ce": "eval/hard_loss", "eval_kl_t1": "eval/kl_div_T1", "train_ce": "distill/hard_loss"}
  curve = {key: [] for key in ("eval_step", "train_step", *names)}
  with open(metrics_file, encoding="utf-8") as f:
    for record in map(json.loads, filter(str.strip, f)):
      kind = "eval" if "eval/hard_loss" in record else "train"
      curve[f"{kind}_step"].append(record["step"])
      for key, name in names.items():
        if key.startswith(kind) and name in record:  # offline evals have no teacher, hence no KL
          curve[key].append(record[name])
  return curve


def train_and_score(arm: Arm, seed: int, inputs: Inputs, held_out: HeldOut, runs_dir: str, plan: StudyPlan) -> dict:
  """Trains one arm from the pruned student (or reuses a finished identical run) and scores its checkpoint."""
  from maxtext_distill_plugin import trainer  # pylint: disable=import-outside-toplevel

  run_dir = os.path.join(runs_dir, f"{arm.name}-seed{seed}")
  argv = arm_argv(arm, inputs, run_dir, plan, seed, inputs.pruned_items)
  cache_key, cache_seconds = ensure_cache(inputs, plan, seed) if arm.offline else ("", 0.0)
  key = _sha(json.dumps([argv, inputs.fingerprint, cache_key]))
  done = _read_json(os.path.join(run_dir, "result.json"))
  if done and done.get("key") == key:
    logging.info("Reusing %s (finished earlier)", run_dir)
    return done
  shutil.rmtree(run_dir, ignore_errors=True)
  os.makedirs(run_dir)
  logging.info("Training %s, seed %d: %s", arm.name, seed, " ".join(arm.overrides) or arm.yaml)
  started = time.perf_counter()
  trained = trainer.train(demo.build_configs(argv, inputs.data))
  seconds = time.perf_counter() - started
  items = os.path.join(trained.checkpoint_dir, str(trained.last_step), "items")
  final = demo.build_configs(arm_argv(arm, inputs, run_dir, plan, seed, items), inputs.data)
  result = {
      "key": key,
      "arm": arm.name,
      "seed": seed,
      "steps": trained.last_step + 1,
      "train_seconds": seconds,
      "cache_seconds": cache_seconds,
      "scores": held_out.score(final.student),
      "curve": read_curve(os.path.join(run_dir, "metrics.jsonl")),
      "checkpoint": items,
      "argv": argv[1:],
  }
  _write_json(os.path.join(run_dir, "result.json"), result)
  logging.info("%s seed %d: held-out CE %.4f (%.0fs)", arm.name, seed, result["scores"]["ce"], seconds)
  return result


def run_arms(inputs: Inputs, held_out: HeldOut, study_dir: str, plan: StudyPlan, started: float) -> list[dict]:
  """Main arms for every seed, then the ablations (first seed) while the projected time fits the budget."""
  runs_dir = os.path.join(study_dir, "runs")
  results = [train_and_score(arm, seed, inputs, held_out, runs_dir, plan) for seed in plan.seeds for arm in MAIN_ARMS]
  per_run = max(r["train_seconds"] for r in results)
  for arm in ABLATIONS[: plan.ablations]:
    elapsed = time.perf_counter() - started
    if elapsed + per_run > plan.budget_s:
      logging.warning("Budget: %.0fs of %.0fs used; skipping %s and later ablations.", elapsed, plan.budget_s, arm.name)
      break
    results.append(train_and_score(arm, plan.seeds[0], inputs, held_out, runs_dir, plan))
  return results


# --- Upstream MaxText's trainer on recipe (b) -----------------------------------------------------


# Keys of this plugin that upstream's config would refuse; the YAML given to upstream leaves them out.
_PLUGIN_ONLY_KEYS = ("distill_teacher_layer_indices",)


def _flattened_yaml(name: str) -> dict:
  """``name`` merged over its chain of shipped base configs, down to MaxText's own ``base.yml``."""
  import yaml  # pylint: disable=import-outside-toplevel

  with open(config_lib.resolve_yaml(name), encoding="utf-8") as f:
    body = yaml.safe_load(f)
  base = body.get("base_config")
  if not base or base == "base.yml":
    return body
  merged = _flattened_yaml(base)
  for key, value in body.items():
    if isinstance(value, dict) and isinstance(merged.get(key), dict):
      value = {**merged[key], **value}
    merged[key] = value
  merged["base_config"] = "base.yml"
  return merged


def _upstream_yaml(inputs: Inputs, path: str) -> None:
  """Recipe (b) as one self-contained YAML, with the data and checkpoint paths inside: upstream builds its
  teacher from the YAML and ``teacher_overrides`` only, so CLI data keys would not reach it."""
  import yaml  # pylint: disable=import-outside-toplevel

  data = inputs.data
  body = {k: v for k, v in _flattened_yaml(LOGIT_KD_YAML).items() if k not in _PLUGIN_ONLY_KEYS}
  body.update(
      grain_train_files=data.train_pattern,
      grain_eval_files=data.eval_pattern,
      tokenizer_path=data.tokenizer_path,
  )
  body["student_overrides"] = {**body.get("student_overrides", {}), "load_parameters_path": inputs.pruned_items}
  body["teacher_overrides"] = {**body.get("teacher_overrides", {}), "load_parameters_path": inputs.teacher_items}
  with open(path, "w", encoding="utf-8") as f:
    yaml.safe_dump(body, f, sort_keys=False)


def _last_error(log_path: str) -> str:
  with open(log_path, encoding="utf-8", errors="replace") as f:
    lines = [line.strip() for line in f if line.strip()]
  errors = [line for line in lines if "Error" in line.split(":")[0] or line.startswith("Error")]
  return errors[-1] if errors else (lines[-1] if lines else "")


def attempt_upstream(inputs: Inputs, study_dir: str, plan: StudyPlan) -> dict:
  """Runs MaxText's own ``train_distill`` (``MAXTEXT_DISTILL_USE_UPSTREAM=1``) on recipe (b); reports what happened.

  Only the outcome is recorded (status, exit code, last error line, log): on MaxText 0.2.5 with google-tunix 0.1.7
  it stops before the first step, so there is no checkpoint to score.
  """
  run_dir = os.path.join(study_dir, "upstream")
  shutil.rmtree(run_dir, ignore_errors=True)
  os.makedirs(run_dir)
  yaml_path, log_path = os.path.join(run_dir, "upstream.yml"), os.path.join(run_dir, "upstream.log")
  _upstream_yaml(inputs, yaml_path)
  cmd = [sys.executable, "-m", "maxtext.trainers.post_train.distillation.train_distill", yaml_path]
  cmd += ["run_name=run", f"base_output_directory={run_dir}", f"steps={plan.steps}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "MAXTEXT_DISTILL_USE_UPSTREAM": "1"}
  started = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    try:
      run = subprocess.run(
          cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=plan.upstream_timeout_s, check=False
      )
      code = run.returncode
    except subprocess.TimeoutExpired:
      code = None
  outcome = {"command": "MAXTEXT_DISTILL_USE_UPSTREAM=1 " + " ".join(cmd), "log": log_path}
  outcome.update(seconds=time.perf_counter() - started, exit_code=code, error=_last_error(log_path))
  outcome["status"] = "ran" if code == 0 else ("timed out" if code is None else "failed")
  logging.info("Upstream train_distill: %s (%s)", outcome["status"], outcome["error"])
  return outcome


# --- Summary, table and plots --------------------------------------------------------------------


def _stats(values: list[float]) -> dict:
  values = np.asarray(values, np.float64)
  spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return {"mean": float(values.mean()), "std": spread, "min": float(values.min()), "max": float(values.max())}


def summarize(runs: list[dict], reference: dict[str, dict]) -> dict[str, dict]:
  """Per arm: the mean and sample standard deviation over seeds of each score, and of the gap recovered."""
  gap = reference["pruned"]["ce"] - reference["teacher"]["ce"]
  arms = {}
  for arm in MAIN_ARMS + ABLATIONS:
    mine = [r for r in runs if r["arm"] == arm.name]
    if not mine:
      continue
    scores = {k: _stats([r["scores"][k] for r in mine]) for k in ("ce", "perplexity", "kl_t1", "top1_agreement")}
    recovered = [(reference["pruned"]["ce"] - r["scores"]["ce"]) / gap for r in mine]
    scores["gap_recovered"] = _stats(recovered)
    scores["train_seconds"] = _stats([r["train_seconds"] for r in mine])
    arms[arm.name] = {"label": arm.label, "seeds": [r["seed"] for r in mine], **scores}
  return arms


def paired_differences(runs: list[dict]) -> dict[str, dict]:
  """Held-out CE differences between two arms trained on the same seed (same data order), over seeds."""
  by_key = {(r["arm"], r["seed"]): r["scores"]["ce"] for r in runs}
  out = {}
  main_pairs = ((LOGIT_KD, SFT), (RECIPE, SFT), (OFFLINE, SFT), (RECIPE, LOGIT_KD), (OFFLINE, LOGIT_KD))
  pairs = main_pairs + tuple((arm, RECIPE) for arm in ABLATIONS)
  for left, right in pairs:
    seeds = [s for (a, s) in by_key if a == left.name and (right.name, s) in by_key]
    diffs = [by_key[(left.name, s)] - by_key[(right.name, s)] for s in seeds]
    if diffs:
      out[f"{left.name} - {right.name}"] = {**_stats(diffs), "n": len(diffs)}
  return out


def _pm(stat: dict, fmt: str) -> str:
  return f"{stat['mean']:{fmt}} ± {stat['std']:{fmt}}" if stat["std"] > 0 else f"{stat['mean']:{fmt}}"


def markdown_table(results: dict) -> str:
  """The results as a Markdown table (mean ± sample std over seeds where there are several)."""
  ref, arms = results["reference"], results["arms"]
  head = "| model | seeds | held-out CE | perplexity | KL(T=1) to teacher | top-1 agreement | gap recovered |"
  lines = [
      head,
      "|---|---|---|---|---|---|---|",
      (
          f"| unigram (training-split counts) | - | {ref['unigram']['ce']:.4f} |"
          f" {math.exp(ref['unigram']['ce']):.1f} | - | - | - |"
      ),
  ]
  for name, label in (("teacher", "teacher, 4 layers"), ("pruned", "pruned student, 2 layers, before")):
    s = ref[name]
    recovered = "100%" if name == "teacher" else "0%"
    lines.append(
        f"| {label} | - | {s['ce']:.4f} | {s['perplexity']:.2f} | {s['kl_t1']:.4f} |"
        f" {100 * s['top1_agreement']:.1f}% | {recovered} |"
    )
  for a in arms.values():
    agree = {k: 100 * v for k, v in a["top1_agreement"].items()}
    gap = {k: 100 * v for k, v in a["gap_recovered"].items()}
    lines.append(
        f"| {a['label']} | {len(a['seeds'])} | {_pm(a['ce'], '.4f')} | {_pm(a['perplexity'], '.2f')} |"
        f" {_pm(a['kl_t1'], '.4f')} | {_pm(agree, '.1f')}% | {_pm(gap, '.1f')}% |"
    )
  return "\n".join(lines)


def _paired(diff: dict) -> str:
  if diff["n"] == 1:
    return f"{diff['mean']:+.4f} nats (one seed)"
  return f"{diff['mean']:+.4f} ± {diff['std']:.4f} nats (n={diff['n']}, range {diff['min']:+.4f} .. {diff['max']:+.4f})"


def markdown_report(results: dict) -> str:
  plan = results["plan"]
  up = results.get("upstream") or {"status": "not attempted", "error": ""}
  paired = [f"- {k}: {_paired(v)}" for k, v in results["paired_ce_differences"].items()]
  return "\n".join([
      (
          f"Held-out: {results['eval_tokens']} target tokens ({plan['demo_plan']['eval_batches']} batches) of"
          f" {results['eval_files']} standard-library files never trained on. {plan['steps']} steps per run,"
          f" seeds {list(plan['seeds'])} (data order)."
      ),
      "",
      markdown_table(results),
      "",
      "Paired held-out CE differences (same seed, negative = left arm better):",
      *paired,
      "",
      f"Upstream train_distill on recipe (b): {up['status']}. {up['error']}",
      "Wall-clock seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["stage_seconds"].items()),
      f"Total {results['seconds']:.0f}s.",
  ])


_CE = ("eval_ce", "ce", "held-out CE (nats)")
_KL = ("eval_kl_t1", "kl_t1", "held-out KL(teacher || student), T=1")
# (file, title, arms, panels); a panel is (curve key, reference key, y label, baseline arm or None).
FIGURES = (
    (
        "study-curves.png",
        "main arms (mean over seeds; band: min to max)",
        MAIN_ARMS,
        (_CE + (None,), _KL + (None,), ("eval_ce", "ce", "held-out CE minus SFT's (same seed)", SFT)),
    ),
    (
        "study-ablation.png",
        "ablations of (c), first seed, as differences from (c)",
        ABLATIONS,
        (("eval_ce", "ce", "held-out CE minus (c)'s", RECIPE), ("eval_kl_t1", "kl_t1", "KL(T=1) minus (c)'s", RECIPE)),
    ),
)


def plot_curves(results: dict, out_dir: str) -> list[str]:
  """PNG learning curves from the trainer's held-out evals; [] when matplotlib is missing."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("matplotlib is not installed: no plots (pip install matplotlib).")
    return []
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for filename, title, arms, panels in FIGURES:
    seeds = results["plan"]["seeds"] if arms is MAIN_ARMS else results["plan"]["seeds"][:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.5), dpi=100)
    for ax, (key, ref_key, ylabel, baseline) in zip(axes, panels):
      for index, arm in enumerate(arms):
        _plot_arm(ax, results, arm, (key, ref_key, baseline), seeds, color=f"C{index}")
      references = (("teacher", ":"), ("pruned", "--")) if baseline is None else ()
      for name, style in references:
        ax.axhline(results["reference"][name][ref_key], color="black", linestyle=style, linewidth=1, label=name)
      if baseline is not None:
        ax.axhline(0.0, color="black", linewidth=1, label=baseline.label)
      ax.set(xlabel="optimizer step", ylabel=ylabel)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    fig.suptitle(f"Pruning recovery, {title}")
    fig.tight_layout()
    written.append(os.path.join(out_dir, filename))
    fig.savefig(written[-1])
    plt.close(fig)
  return written


def _values(results: dict, run: dict, key: str, ref_key: str) -> list[float]:
  return [results["reference"]["pruned"][ref_key]] + run["curve"][key]


def _plot_arm(ax, results: dict, arm: Arm, panel: tuple, seeds, color: str) -> None:
  """One arm's mean curve (step 0: the pruned student), minus ``baseline``'s on the same seed, band over seeds."""
  key, ref_key, baseline = panel
  # A panel shows the runs that logged its metric at every eval (offline runs log no in-loop KL).
  runs = {
      r["seed"]: r
      for r in results["runs"]
      if r["arm"] == arm.name and r["seed"] in seeds and len(r["curve"][key]) == len(r["curve"]["eval_step"])
  }
  bases = {r["seed"]: r for r in results["runs"] if baseline is not None and r["arm"] == baseline.name}
  rows = []
  for seed, run in sorted(runs.items()):
    if baseline is None:
      rows.append(_values(results, run, key, ref_key))
    elif seed in bases and arm is not baseline:
      rows.append(np.subtract(_values(results, run, key, ref_key), _values(results, bases[seed], key, ref_key)))
  if not rows:
    return
  steps, values = [0] + next(iter(runs.values()))["curve"]["eval_step"], np.array(rows)
  ax.plot(steps, values.mean(axis=0), marker=".", color=color, label=arm.label)
  if len(rows) > 1:
    ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2)


# --- Main ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str):
  start = time.perf_counter()
  yield
  seconds[name] = time.perf_counter() - start


def score_references(inputs: Inputs, study_dir: str, plan: StudyPlan) -> tuple[HeldOut, dict]:
  """The held-out batches, and the scores of the teacher, the pruned student and the unigram floor."""
  probe_dir = os.path.join(study_dir, "probe")
  probe = demo.build_configs(arm_argv(RECIPE, inputs, probe_dir, plan, 0, inputs.pruned_items), inputs.data)
  held_out = HeldOut(probe, plan.demo_plan.eval_batches)
  reference = {"teacher": held_out.teacher_scores(), "pruned": held_out.score(probe.student)}
  unigram = demo.unigram_cross_entropy(inputs.data.train_pattern, inputs.data.vocab_size, held_out.batches)
  reference["unigram"] = {"ce": unigram, "perplexity": math.exp(unigram)}
  logging.info("Held-out CE: teacher %.4f, pruned %.4f", reference["teacher"]["ce"], reference["pruned"]["ce"])
  return held_out, reference


def run_study(root: str, plan: StudyPlan, *, upstream: bool, plots_dir: str | None) -> dict:
  """Every stage; writes ``<root>/study/results.json`` and ``results.md`` and returns the results."""
  started, seconds = time.perf_counter(), {}
  study_dir = os.path.join(root, "study")
  os.makedirs(study_dir, exist_ok=True)
  with _timed(seconds, "data, teacher, pruning"):
    inputs = prepare_inputs(root, study_dir, plan)
  with _timed(seconds, "reference scores"):
    held_out, reference = score_references(inputs, study_dir, plan)
  with _timed(seconds, "training and scoring"):
    runs = run_arms(inputs, held_out, study_dir, plan, started)
  with _timed(seconds, "upstream attempt"):
    upstream_outcome = attempt_upstream(inputs, study_dir, plan) if upstream else None
  results = {
      "plan": {**dataclasses.asdict(plan), "kept_layers": list(demo.KEEP_LAYERS)},
      "eval_tokens": held_out.tokens,
      "eval_files": inputs.data.stats["eval_files"],
      "reference": reference,
      "runs": runs,
      "arms": summarize(runs, reference),
      "paired_ce_differences": paired_differences(runs),
      "upstream": upstream_outcome,
      "stage_seconds": seconds,
      "seconds": time.perf_counter() - started,
  }
  return write_outputs(results, study_dir, plots_dir)


def write_outputs(results: dict, study_dir: str, plots_dir: str | None) -> dict:
  """The plots, ``results.json`` and ``results.md``."""
  results["plots"] = plot_curves(results, plots_dir or study_dir)
  _write_json(os.path.join(study_dir, "results.json"), results)
  with open(os.path.join(study_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write(markdown_report(results) + "\n")
  return results


def replot(study_dir: str, plots_dir: str | None) -> dict:
  """Redraws the outputs of a finished study (no training)."""
  results = _read_json(os.path.join(study_dir, "results.json"))
  if results is None:
    raise FileNotFoundError(f"no results.json in {study_dir}: run the study first.")
  return write_outputs(results, study_dir, plots_dir)


_OWN_FILES = (os.path.dirname(os.path.abspath(demo.__file__)) + os.sep, os.path.abspath(__file__))


class _OwnRecordsOnly(std_logging.Filter):
  """INFO lines of this script and the plugin, and anyone's errors; not the hosts' chatter."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.ERROR or os.path.abspath(record.pathname).startswith(_OWN_FILES)


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  parser.add_argument("--output-dir", default=None, help="demo root: data/ and teacher/ (shared with the demo), study/")
  parser.add_argument("--quick", action="store_true", help="tiny corpus, teacher and step counts (smoke test)")
  parser.add_argument("--steps", type=int, default=None, help="override the distillation steps per run")
  parser.add_argument("--seeds", type=int, default=None, help="number of seeds of the main arms")
  parser.add_argument("--ablations", type=int, default=None, help="how many ablations, in priority order, at most")
  parser.add_argument("--budget-minutes", type=float, default=None, help="no new ablation once this is projected")
  parser.add_argument("--no-upstream", action="store_true", help="skip the attempt at upstream's trainer")
  parser.add_argument("--plots-dir", default=None, help="where the PNGs go (default: <output-dir>/study)")
  parser.add_argument("--replot", action="store_true", help="only redraw the plots and results.md from results.json")
  return parser.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> StudyPlan:
  plan = QUICK if args.quick else FULL
  changes = {
      "steps": args.steps,
      "eval_interval": max(1, args.steps // 8) if args.steps else None,
      "seeds": tuple(range(args.seeds)) if args.seeds else None,
      "ablations": args.ablations,
      "budget_s": args.budget_minutes * 60 if args.budget_minutes else None,
  }
  return dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_logger().addFilter(_OwnRecordsOnly())
  warnings.filterwarnings("ignore", module=r"orbax\..*")
  plan = plan_from_args(args)
  root = os.path.abspath(args.output_dir or (os.path.join("demo_output", "quick") if args.quick else "demo_output"))
  if args.replot:
    results = replot(os.path.join(root, "study"), args.plots_dir)
  else:
    results = run_study(
        root, plan, upstream=plan.upstream_timeout_s > 0 and not args.no_upstream, plots_dir=args.plots_dir
    )
  print(markdown_report(results))
  print(f"Results: {os.path.join(root, 'study', 'results.json')}; plots: {', '.join(results['plots']) or 'none'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
