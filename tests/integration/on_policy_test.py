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
import sys

from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin import cli
from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.model import forward as model_forward
from maxtext_distill_plugin.teachers import kinds
from maxtext_distill_plugin.training import on_policy, trainer
from maxtext_distill_plugin.training import student_objective
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
      "per_device_batch_size=1",
      "gradient_accumulation_steps=2",  # both micro-batches are sampled before the step
      *("distill_beta=0.5", "distill_layer_indices=[0]", "distill_teacher_layer_indices=[1]"),  # feature loss too
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
    assert math.isfinite(r["distill/total_loss"]) and r["distill/out_proj_feature_loss"] > 0
  evals = [r for r in records if on_policy.NLL_METRIC in r]
  assert [r["step"] for r in evals] == [3]
  assert math.isfinite(evals[0][on_policy.NLL_METRIC]) and evals[0][on_policy.NLL_METRIC] > 0


def _record_batches(monkeypatch) -> dict:
  """Records the batch each optimizer step trains on (after the on-policy choice)."""
  seen = {}
  original = on_policy.OnPolicy.batch_for_step

  def recording(self, step, state, teacher_state, data_batch, **kwargs):
    batch, metrics = original(self, step, state, teacher_state, data_batch, **kwargs)
    seen[step] = {k: np.asarray(jax.device_get(v)) for k, v in batch.items()}
    return batch, metrics

  monkeypatch.setattr(on_policy.OnPolicy, "batch_for_step", recording)
  return seen


_RAMP = [
    "distill_on_policy_fraction=0.0",
    "distill_on_policy_fraction_end=1.0",
    "distill_on_policy_fraction_schedule=linear",
]
_STEPS = 4
_LOSSES = ("distill/total_loss", "distill/soft_loss", "distill/hard_loss", "distill/teacher_loss", "grad_norm")


def test_lambda_zero_steps_are_todays_and_a_restart_samples_the_same(tmp_path, sft_yaml, teacher_checkpoint, monkeypatch):
  """lambda ramps 0 -> 1 over 4 steps; the draws (documented: Bernoulli from fold_in(key(seed), step)) pick steps.

  Steps trained on data give exactly the numbers of a run without on-policy keys. That run, stopped after step 1
  and restarted from its checkpoint with the ramp, samples at step 2 exactly what the uninterrupted run sampled
  and ends with the same losses: the choice and the samples follow from the checkpoint (step, parameters, data).
  """
  common = [f"max_target_length={_LENGTH}", f"distill_sample_max_new_tokens={_NEW}", f"steps={_STEPS}"]
  want_draws = []
  for n in range(_STEPS):
    choice_key = jax.random.split(jax.random.fold_in(jax.random.key(0), n))[0]  # init_weights_seed=0
    want_draws.append(float(jax.random.uniform(choice_key) < n / _STEPS))
  assert want_draws == [0.0, 0.0, 1.0, 0.0]  # this seed samples at step 2 only: both branches are exercised

  seen = _record_batches(monkeypatch)
  mixed = _train(sft_yaml, tmp_path, teacher_checkpoint, *common, *_RAMP, "enable_checkpointing=False", run_name="m")
  mixed = _by_step(mixed.history)
  reference_batches = dict(seen)
  assert [mixed[s]["distill/on_policy_step"] for s in sorted(mixed)] == want_draws
  for s in sorted(mixed):
    np.testing.assert_allclose(mixed[s]["distill/on_policy_fraction"], (s - 1) / _STEPS, rtol=1e-6)
  for s in (1, 2):
    assert not any(name.startswith("sample/") for name in mixed[s])
  assert 1.0 <= mixed[3]["sample/completion_length"] <= _NEW
  # The sampled batch scores its generated tokens only (2 rows).
  assert reference_batches[2]["targets_segmentation"].sum() == mixed[3]["sample/completion_length"] * 2

  def stop_after_step_1(self, step):
    self.requested = self.requested or step == 1
    return self.requested

  with monkeypatch.context() as patch:
    patch.setattr(trainer.run_guard.PreemptionFlag, "should_stop", stop_after_step_1)
    today = _train(sft_yaml, tmp_path, teacher_checkpoint, *common, run_name="restarted")
  assert today.preempted and today.last_step == 1
  today = _by_step(today.history)
  assert sorted(today) == [1, 2]
  for s in (1, 2):  # data steps before any sampled one: bit for bit today's numbers
    assert {n: mixed[s][n] for n in _LOSSES} == {n: today[s][n] for n in _LOSSES}
  seen.clear()
  resumed = _by_step(_train(sft_yaml, tmp_path, teacher_checkpoint, *common, *_RAMP, run_name="restarted").history)
  assert sorted(seen) == [2, 3]
  for step in (2, 3):
    for key, value in reference_batches[step].items():
      np.testing.assert_array_equal(seen[step][key], value, err_msg=f"step {step} {key}")
  for s in (3, 4):
    assert {n: resumed[s][n] for n in _LOSSES} == {n: mixed[s][n] for n in _LOSSES}


def test_loss_on_a_fixed_sample_equals_numpy(tmp_path, sft_yaml, teacher_checkpoint):
  """The step's loss terms on sampled completions (dense and chunked) against float64 NumPy on the two models'
  logits, scored only on the generated tokens as the data and the samples say: on the student's samples, and on
  the teacher's (sequence-level KD, distill_teacher_generated), which the step's own choice returns."""
  from maxtext.input_pipeline import input_pipeline_interface  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  cfgs = config.build(
      _argv(
          sft_yaml,
          tmp_path,
          teacher_checkpoint,
          *_ON_POLICY,
          "distill_temperature=2.0",
          "distill_alpha=0.7",
          "distill_teacher_generated=True",
      )
  )
  mesh = maxtext_utils.get_mesh_from_config(cfgs.student)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(cfgs.student.logical_axis_rules):
    data, _ = input_pipeline_interface.create_data_iterator(cfgs.student, mesh)
    batch = {k: jnp.asarray(v) for k, v in next(data).items()}
    student_graphdef, student_state = nnx.split(model_creation_utils.from_pretrained(cfgs.student, mesh=mesh))
    teacher_graphdef, teacher_state = nnx.split(model_creation_utils.from_pretrained(cfgs.teacher, mesh=mesh))
    policy = on_policy.OnPolicy(cfgs, mesh, student_graphdef, teacher_graphdef, on_policy.special_ids(cfgs.student))
    sampled = [policy.sample_batch("student", student_state, batch, jax.random.key(3))]
    # The step's own choice with distill_teacher_generated: the teacher writes, with the sampling key of (seed, step).
    sampled.append(policy.sample_batch("teacher", teacher_state, batch, on_policy.step_keys(0, 5)[1]))
    step_batch, step_metrics = policy.batch_for_step(5, None, teacher_state, batch)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(step_batch), jax.device_get(sampled[1][0]))
    assert step_metrics["distill/on_policy_step"] == (1.0, 1.0)
    weights = student_objective.scheduled_weights(cfgs.settings, 0, _STEPS)
    models = (student_graphdef, student_state, teacher_graphdef, teacher_state)
    terms, logits = _jitted_loss_and_logits(cfgs.settings, weights, models)
    for built, samples, has_prompt, _ in sampled:
      results = {chunked: jax.device_get(terms(built, chunked)) for chunked in (False, True)}
      student_logits, teacher_logits = (np.asarray(x, np.float64) for x in jax.device_get(logits(built)))
      _check_loss_against_numpy(results, student_logits, teacher_logits, built, samples, has_prompt, batch)


def _jitted_loss_and_logits(settings, weights, models):
  """``terms(batch, chunked)``: the step's (objective sum, count, metrics); ``logits(batch)``: (student, teacher)."""
  student_graphdef, student_state, teacher_graphdef, teacher_state = models

  def terms(batch, chunked):
    student = nnx.merge(student_graphdef, student_state)
    teacher = kinds.FrozenModel(teacher_graphdef, settings).head(teacher_state, batch, lean=chunked)
    return student_objective.student_terms(
        student, teacher, batch, weights, settings, chunked=chunked, enable_dropout=False
    )

  def logits(batch):
    return tuple(
        model_forward.forward(nnx.merge(graphdef, state), batch, settings=settings, enable_dropout=False)[0]
        for graphdef, state in ((student_graphdef, student_state), (teacher_graphdef, teacher_state))
    )

  return jax.jit(terms, static_argnums=1), jax.jit(logits)


def _check_loss_against_numpy(results, student_logits, teacher_logits, built, samples, has_prompt, batch):
  """See :func:`test_loss_on_a_fixed_sample_equals_numpy`; ``results[chunked]`` is the step's (sum, count, metrics)."""
  # The mask from the data and the samples alone: row b's prompt ends before its first scored label, and the labels
  # at positions prompt_length - 1 ... prompt_length + completion_length - 2 are the generated tokens.
  scored_in_data = np.asarray(batch["targets_segmentation"]) != 0
  prompt_length = scored_in_data.argmax(axis=1) + 1
  completion_length = np.asarray(samples.completion_length_B)
  assert np.asarray(has_prompt).all() and (completion_length >= 1).all()
  rows, length = scored_in_data.shape
  mask = np.zeros((rows, length), bool)
  for b in range(rows):
    mask[b, prompt_length[b] - 1 : prompt_length[b] + completion_length[b] - 1] = True
  tokens = np.asarray(samples.tokens_BxS)
  labels = np.asarray(built["targets"])
  np.testing.assert_array_equal(np.asarray(built["targets_segmentation"]) != 0, mask)
  np.testing.assert_array_equal(labels[mask], tokens[:, 1:][mask[:, :-1]])

  def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

  temperature, alpha = 2.0, 0.7
  teacher_logp, student_logp = log_softmax(teacher_logits / temperature), log_softmax(student_logits / temperature)
  kl = (np.exp(teacher_logp) * (teacher_logp - student_logp)).sum(-1)  # the run's distill_divergence: forward_kl
  ce = -np.take_along_axis(log_softmax(student_logits), labels[..., None], axis=-1)[..., 0]
  want = {
      "distill/soft_loss": (temperature**2 * kl)[mask].mean(),
      "distill/hard_loss": ce[mask].mean(),
  }
  want["distill/total_loss"] = alpha * want["distill/soft_loss"] + (1 - alpha) * want["distill/hard_loss"]
  for chunked, (total, count, metrics) in results.items():
    assert float(count) == mask.sum() == completion_length.sum()
    np.testing.assert_allclose(float(total) / float(count), want["distill/total_loss"], rtol=2e-5)
    for name, value in want.items():
      got = float(metrics[name][0]) / float(metrics[name][1])
      np.testing.assert_allclose(got, value, rtol=2e-5, err_msg=f"{name} chunked={chunked}")


def _refused(capsys, argv) -> str:
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  return capsys.readouterr().err


def test_on_policy_refusals_exit_2_before_anything_is_built(tmp_path, sft_yaml, teacher_checkpoint, capsys):
  cache = tmp_path / "cache"
  cache.mkdir()
  (cache / "part").write_text("x")
  out = tmp_path / "out"
  cases = [
      (sft_yaml, ["distill_on_policy_fraction=1.5"], "distill_on_policy_fraction=1.5"),
      (sft_yaml, ["distill_on_policy_fraction=1.0", f"offline_data_dir={cache}"], "offline cache holds no teacher"),
      (sft_yaml, ["distill_on_policy_fraction=1.0", "distill_sample_max_new_tokens=32"], "distill_sample_max_new_tokens"),
      (TINY_YAML, ["distill_on_policy_fraction=1.0"], "use_sft"),
      (sft_yaml, ["distill_on_policy_fraction=1.0", "sft_train_on_completion_only=False"], "sft_train_on_completion"),
      (sft_yaml, ["distill_on_policy_fraction=1.0", "packing=True"], "packing"),
      (sft_yaml, ["distill_teacher_generated=True"], "distill_teacher_generated"),
      (sft_yaml, ["distill_on_policy_fraction_schedule=linear"], "distill_on_policy_fraction_end"),
      (sft_yaml, ["distill_on_policy_fraction=1.0", "distill_sample_top_p=0"], "distill_sample_top_p"),
      (sft_yaml, ["distill_on_policy_fraction=1.0", "distill_sample_temperature=-1"], "distill_sample_temperature"),
  ]
  for yaml, extra, needle in cases:
    err = _refused(capsys, _argv(yaml, out, teacher_checkpoint, *extra))
    assert needle in err and "Fix" in err, (extra, err[-1500:])
  assert not out.exists(), "nothing may be written before the error"


def test_only_the_step_that_ends_a_logging_window_waits(tmp_path, sft_yaml, teacher_checkpoint, monkeypatch):
  """A sampled step dispatches and returns like a plain one; the last step of each window is timed.

  Records the step of each of the plugin's own waits (``jax.block_until_ready`` and ``jax.device_get`` called from the
  on-policy step or the trainer loop): 4 sampled steps with ``log_period=2`` wait at steps 1 and 3 only, where the
  sampling, the teacher's scoring and the update are timed apart, and the logged window means still count every
  sampled row.
  """
  waits, current = [], [None]
  original_step = on_policy.OnPolicy.run_step

  def stepping(self, train_step, step, *args, **kwargs):
    current[0] = step
    return original_step(self, train_step, step, *args, **kwargs)

  def counting(original):
    def wrapper(*args, **kwargs):
      caller = sys._getframe(1).f_globals.get("__name__", "")  # pylint: disable=protected-access
      if caller.endswith(("training.on_policy", "training.trainer")):
        waits.append(current[0])
      return original(*args, **kwargs)

    return wrapper

  monkeypatch.setattr(on_policy.OnPolicy, "run_step", stepping)
  monkeypatch.setattr(jax, "block_until_ready", counting(jax.block_until_ready))
  monkeypatch.setattr(jax, "device_get", counting(jax.device_get))
  result = _train(
      sft_yaml, tmp_path, teacher_checkpoint, *_ON_POLICY, "steps=4", "log_period=2", "enable_checkpointing=False"
  )
  assert waits and set(waits) == {1, 3}, waits
  logged = _by_step(result.history)
  assert sorted(logged) == [2, 4]
  for record in logged.values():
    assert record["distill/on_policy_step"] == 1.0
    assert 1.0 <= record["sample/completion_length"] <= _NEW
    assert record["sample/tokens_per_second"] > 0 and record["sample/teacher_nll"] > 0
    parts = [record[f"perf/{name}_seconds"] for name in ("sample", "teacher", "step", "dispatch")]
    assert all(p > 0 for p in parts), parts
    # The step is the teacher's scoring and the update; the host's dispatch is a part of each step's wall time.
    update = max(record["perf/step_seconds"] - record["perf/teacher_seconds"], 0.0)
    # The logged parts are float32: their difference carries their rounding, which is large against a short update.
    assert record["perf/update_seconds"] == pytest.approx(update, abs=1e-6 * record["perf/step_seconds"])
    assert record["perf/dispatch_seconds"] <= record["perf/step_time_s"]
