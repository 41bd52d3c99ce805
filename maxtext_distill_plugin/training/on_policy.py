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

"""On-policy distillation (GKD-style mixing): some optimizer steps train on sampled completions.

At optimizer step ``n`` the scheduled fraction ``lambda(n)`` (``distill_on_policy_fraction`` and its schedule)
decides, by a Bernoulli draw from ``fold_in(key(init_weights_seed), n)``, whether the dataset batch is replaced by
completions of its prompts sampled from the current student (or the teacher, ``distill_teacher_generated``). The
sampling key comes from the same ``(seed, n)``, so the checkpoint (which holds ``n``, the parameters and the data
position) determines the choice and the samples: a resumed run samples exactly what an uninterrupted one does.

Sampling runs before the step, outside its gradient, over the whole loaded batch (every micro-batch of a
gradient-accumulation step). The compiled train step is unchanged: it runs the teacher on the sampled sequences
and the student's divergence on the generated tokens (``targets_segmentation`` marks only those), with the
run's ``distill_divergence`` (reverse_kl or jsd are the usual on-policy choices; it is never switched silently).
"""

import time

from absl import logging
from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration import multi_teacher
from maxtext_distill_plugin.configuration import on_policy_checks
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.loss.schedules import schedule_value
from maxtext_distill_plugin.training import on_policy_data
from maxtext_distill_plugin.training import step as step_lib
from maxtext_distill_plugin.training import student_objective

NLL_METRIC = metric_names.EVAL_TEACHER_NLL_OF_SAMPLES


def special_ids(config) -> tuple[int, int]:
  """``(eos_id, pad_id)`` of the tokenizer the data pipeline uses; raises ConfigError when it has no EOS."""
  kind = str(getattr(config.dataset_type, "value", config.dataset_type))
  if kind == "hf":  # MaxText's HF pipeline always tokenizes with transformers, whatever tokenizer_type says
    import transformers  # pylint: disable=import-outside-toplevel

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(config.tokenizer_path), local_files_only=True)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = tokenizer.unk_token_id if pad is None else pad
  else:
    from maxtext.input_pipeline import tokenizer as tokenizers  # pylint: disable=import-outside-toplevel

    tokenizer = tokenizers.build_tokenizer(
        config.tokenizer_path, config.tokenizer_type, config.add_bos, config.add_eos, config.hf_access_token
    )
    eos, pad = getattr(tokenizer, "eos_id", None), getattr(tokenizer, "pad_id", None)
  if eos is None or eos < 0:
    raise errors.ConfigError(
        "tokenizer_path", config.tokenizer_path, "on-policy sampling stops at EOS; use a tokenizer with an EOS token."
    )
  return int(eos), int(pad) if pad is not None and pad >= 0 else 0


def scheduled_fraction(settings, step: int, total_steps: int) -> float:
  """lambda at optimizer ``step``."""
  s = settings
  return float(
      schedule_value(
          s.distill_on_policy_fraction_schedule,
          s.distill_on_policy_fraction,
          s.distill_on_policy_fraction_end,
          step,
          total_steps,
      )
  )


def step_keys(seed: int, step: int):
  """``(choice_key, sample_key)`` of optimizer ``step``: a function of the run's seed and the step only."""
  choice, sample = jax.random.split(jax.random.fold_in(jax.random.key(seed), step))
  return choice, sample


def uses_samples(seed: int, step: int, fraction: float) -> bool:
  """The Bernoulli(lambda) choice of ``step`` (lambda 0: never; 1: always), drawn on the host.

  The draw runs on the CPU backend where there is one: reading it back then waits for a few host instructions, not
  for the accelerator's queue of dispatched steps. Threefry gives the same bits on every backend, so the choice is the
  same wherever it runs (and on every process of a multi-host run).
  """
  if fraction <= 0.0 or fraction >= 1.0:
    return fraction >= 1.0
  with jax.default_device(_host_device()):
    return bool(jax.random.bernoulli(step_keys(seed, step)[0], fraction))


def _host_device():
  try:
    return jax.devices("cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS names only the accelerator: the default device draws
    return None


class OnPolicy:
  """Replaces dataset batches by sampled ones and scores the student's greedy samples at eval."""

  def __init__(self, configs, mesh, student_graphdef, teacher_graphdef, special: tuple[int, int], state_graphdef=None):
    """``student_graphdef`` / ``teacher_graphdef``: ``nnx.split`` of the MaxText models; ``state_graphdef``: of the
    student's train state, whose ``model`` :meth:`batch_for_step` samples from; ``special``: (eos_id, pad_id)."""
    from maxtext_distill_plugin.model import sampling  # pylint: disable=import-outside-toplevel

    self._sampling = sampling
    student, self.settings = configs.student, configs.settings
    self.total_steps = int(student.steps)
    self.seed = int(student.init_weights_seed)
    self.length = int(student.max_target_length)
    self.prompt_len = on_policy_checks.prompt_bucket(student, self.settings)
    self.eos_id, self.pad_id = special
    self._configs, self._mesh = configs, mesh
    self._state_graphdef = state_graphdef
    self._graphdefs = {"student": student_graphdef, "teacher": teacher_graphdef}
    self._samplers = {}
    s = self.settings
    self._train_options = sampling.SampleOptions(
        max_new_tokens=s.distill_sample_max_new_tokens,
        temperature=s.distill_sample_temperature,
        top_p=s.distill_sample_top_p,
        top_k=s.distill_sample_top_k,
        eos_id=self.eos_id,
        pad_id=self.pad_id,
    )
    self._greedy_options = sampling.SampleOptions(
        max_new_tokens=s.distill_sample_max_new_tokens, temperature=0.0, eos_id=self.eos_id, pad_id=self.pad_id
    )
    self._programs = {}
    self._rules = student.logical_axis_rules
    self._train_rows = int(student.micro_batch_size_to_train_on)
    self._accumulation = int(student.gradient_accumulation_steps)
    self._teacher_nll = self._teacher_train_nll = None
    logging.info(
        "On-policy distillation: lambda=%s (%s to %s), %s samples, %d new tokens after a %d-token prompt bucket",
        s.distill_on_policy_fraction,
        s.distill_on_policy_fraction_schedule,
        s.distill_on_policy_fraction_end,
        "teacher" if s.distill_teacher_generated else "student",
        s.distill_sample_max_new_tokens,
        self.prompt_len,
    )

  def model_state(self, state):
    """The student's model state inside its train ``state``."""
    return nnx.state(nnx.merge(self._state_graphdef, state).model)

  def _sampler(self, who: str, options, rows: int):
    """One compiled sampler per (model, options, batch rows): the shapes are fixed, so each compiles once."""
    key = (who, options, rows)
    if key not in self._samplers:
      config = self._configs.teacher if who == "teacher" else self._configs.student
      self._samplers[key] = self._sampling.make_sampler(
          self._graphdefs[who], config, options, self.prompt_len, rows, mesh=self._mesh
      )
    return self._samplers[key]

  def _step_program(self, who: str, rows: int):
    """A step's sampling as one jitted program: the prompts out of the dataset batch, the sampler, the training batch
    in the dataset's dtypes and the statistics (one dispatch, nothing between programs); ``program(source_state,
    batch, rng) -> (training batch, statistics)``, ``source_state`` the student's train state or the teacher's."""
    key = (who, rows)
    if key not in self._programs:
      sampler = self._sampler(who, self._train_options, rows)
      merge_model = who == "student"
      state_graphdef, prompt_len, pad_id, length = self._state_graphdef, self.prompt_len, self.pad_id, self.length

      def program(source_state, batch: dict, rng):
        # The student's train state is merged here, inside the trace: no host work per step to take its model out.
        model_state = nnx.state(nnx.merge(state_graphdef, source_state).model) if merge_model else source_state
        prompts = on_policy_data.prompts_from_batch(batch, prompt_len, pad_id)
        has_prompt = prompts.length_B > 0
        # A padding row is sampled from one pad token (the sampler needs a prompt) and dropped from the batch.
        samples = sampler.fn(model_state, prompts.tokens_BxP, jnp.maximum(prompts.length_B, 1), rng)
        built = on_policy_data.batch_from_samples(
            samples.tokens_BxS,
            samples.prompt_mask_BxS,
            samples.completion_mask_BxS,
            has_prompt,
            length=length,
            pad_id=pad_id,
        )
        built = {k: v.astype(batch[k].dtype) if k in batch else v for k, v in built.items()}
        count = jnp.sum(has_prompt, dtype=jnp.float32)
        stats = {
            metric_names.SAMPLE_COMPLETION_LENGTH: (
                jnp.sum(jnp.where(has_prompt, samples.completion_length_B, 0), dtype=jnp.float32),
                count,
            ),
            metric_names.SAMPLE_EOS_RATE: (jnp.sum(has_prompt & samples.hit_eos_B, dtype=jnp.float32), count),
            metric_names.SAMPLE_PROMPT_TRUNCATED_RATE: (
                jnp.sum(has_prompt & prompts.truncated_B, dtype=jnp.float32),
                count,
            ),
        }
        return built, stats

      self._programs[key] = jax.jit(program)
    return self._programs[key]

  def sample_batch(self, who: str, model_state, batch: dict, rng, *, greedy: bool = False, rows_scored=None):
    """Completes ``batch``'s prompts with ``who`` ("student" or "teacher", whose ``model_state`` is given).

    Returns:
      ``(training batch, Samples, rows with a prompt [B], Prompts)``; the training batch is
      :func:`on_policy_data.batch_from_samples` of the samples. ``rows_scored``: only the first rows are scored.
    """
    options = self._greedy_options if greedy else self._train_options
    prompts = on_policy_data.prompts_from_batch(batch, self.prompt_len, self.pad_id)
    has_prompt = prompts.length_B > 0
    if rows_scored is not None:
      has_prompt = has_prompt & (jnp.arange(has_prompt.shape[0]) < rows_scored)
    rows = int(prompts.tokens_BxP.shape[0])
    samples = self._sampler(who, options, rows)(model_state, prompts.tokens_BxP, jnp.maximum(prompts.length_B, 1), rng)
    built = on_policy_data.batch_from_samples(
        samples.tokens_BxS,
        samples.prompt_mask_BxS,
        samples.completion_mask_BxS,
        has_prompt,
        length=self.length,
        pad_id=self.pad_id,
    )
    return built, samples, has_prompt, prompts

  def batch_for_step(self, step: int, state, teacher_state, data_batch):
    """``(batch, metrics)``: the batch the train step runs at ``step`` and its (sum, count) metrics
    (``distill/on_policy_step`` says whether it was sampled). Nothing here waits for the device: the statistics stay
    device scalars until the window's flush, so sampling, scoring and update of consecutive steps queue back to
    back."""
    fraction = scheduled_fraction(self.settings, step, self.total_steps)
    sampled = uses_samples(self.seed, step, fraction)
    metrics = {
        metric_names.ON_POLICY_FRACTION: (fraction, 1.0),
        metric_names.ON_POLICY_STEP: (float(sampled), 1.0),
        **{name: (0.0, 0.0) for name in metric_names.SAMPLED_ONLY},
    }
    if not sampled:
      return data_batch, metrics
    who = "teacher" if self.settings.distill_teacher_generated else "student"
    with jax.set_mesh(self._mesh), nn_partitioning.axis_rules(self._rules):
      built, stats = self._step_program(who, int(data_batch["inputs"].shape[0]))(
          teacher_state if who == "teacher" else state, data_batch, step_keys(self.seed, step)[1]
      )
    metrics.update(stats)
    return match_batch(built, data_batch), metrics

  def run_step(self, train_step, step: int, state, teacher_state, data_batch, *, timed: bool):
    """One optimizer step: samples when the step's draw says so, then ``train_step``; ``(state, metrics)``.

    Only a ``timed`` step (the trainer times the last step of each logging window) waits for the device. It first lets
    the queue of earlier steps drain, then times each part alone: ``perf/sample_seconds`` (the sampling program),
    ``perf/teacher_seconds`` (the teacher's scoring of the sampled batch, run once more on its own, one micro-batch
    times the accumulation steps; it also gives ``sample/teacher_nll``), ``perf/step_seconds`` (the train step) and
    ``perf/update_seconds`` (the step less the teacher's scoring: the student's forward, backward and update). Every
    step logs ``perf/dispatch_seconds``, the host's time issuing its work (waits excluded): against the window's
    ``perf/step_time_s`` it says how far the host runs ahead of the device.
    """
    if timed:
      jax.block_until_ready(state)
    started = time.perf_counter()
    batch, metrics = self.batch_for_step(step, state, teacher_state, data_batch)
    sampled = metrics[metric_names.ON_POLICY_STEP][0] == 1.0
    dispatch = time.perf_counter() - started
    teacher_seconds = None
    if timed and sampled:
      batch = jax.block_until_ready(batch)
      seconds = time.perf_counter() - started
      lengths = metrics[metric_names.SAMPLE_COMPLETION_LENGTH][0]
      metrics[metric_names.SAMPLE_TOKENS_PER_SECOND] = (lengths, seconds)
      metrics[metric_names.SAMPLE_SECONDS] = (seconds, 1.0)
      scoring = self._teacher_scoring(teacher_state, batch)  # compiled before the clock starts
      teacher_started = time.perf_counter()
      nll = jax.block_until_ready(scoring(teacher_state, batch))
      teacher_seconds = (time.perf_counter() - teacher_started) * self._accumulation
      metrics.update({metric_names.SAMPLE_TEACHER_NLL: nll, metric_names.TEACHER_SECONDS: (teacher_seconds, 1.0)})
    started = time.perf_counter()
    state, step_metrics = train_step(state, teacher_state, batch)
    dispatch += time.perf_counter() - started
    metrics[metric_names.STEP_SECONDS] = (0.0, 0.0)  # every step logs the same keys; only timed steps count
    if timed:
      state, step_metrics = jax.block_until_ready((state, step_metrics))
      step_seconds = time.perf_counter() - started
      metrics[metric_names.STEP_SECONDS] = (step_seconds, 1.0)
      if teacher_seconds is not None:
        metrics[metric_names.UPDATE_SECONDS] = (max(step_seconds - teacher_seconds, 0.0), 1.0)
    metrics[metric_names.DISPATCH_SECONDS] = (dispatch, 1.0)
    return state, {**step_metrics, **metrics}

  def _teacher_scoring(self, teacher_state, batch):
    """The teacher's NLL of the first micro-batch of a training batch (what a step's teacher does per micro-batch),
    compiled once for these shapes."""
    if self._teacher_train_nll is None:
      nll, rows = self._make_teacher_nll(), self._train_rows

      # Routed, the rows must keep their blocks: the step's micro-batch 0 (rows 0, k, 2k, ...); else any rows will do.
      stride = self._accumulation if self._configs.routes else 1

      def first_micro_batch_nll(teacher_state, batch):
        return nll(teacher_state, {key: v[::stride][:rows] for key, v in batch.items()})

      self._teacher_train_nll = jax.jit(first_micro_batch_nll).lower(teacher_state, batch).compile()
    return self._teacher_train_nll

  def eval_metrics(self, state, teacher_state, batch, rows_scored: int | None) -> dict:
    """``eval/teacher_nll_of_student_samples``: the teacher's per-token NLL of the student's greedy completions."""
    built, _, _, _ = self.sample_batch(
        "student", self.model_state(state), batch, jax.random.key(0), greedy=True, rows_scored=rows_scored
    )
    if self._teacher_nll is None:
      self._teacher_nll = jax.jit(self._make_teacher_nll())
    return {NLL_METRIC: self._teacher_nll(teacher_state, built)}

  def _make_teacher_nll(self):
    """The teacher's NLL of a batch. With several teachers (``teachers:``): routed, each row's own teacher's (the
    batch's row blocks, :mod:`sources.routed`); else the weighted mean of their NLLs."""
    settings, teacher_graphdef, configs = self.settings, self._graphdefs["teacher"], self._configs
    teacher_configs = [config for _, config in configs.teachers] or [configs.teacher]
    chunked = step_lib.use_chunked_loss(settings, configs.student, *teacher_configs)
    several = isinstance(teacher_graphdef, tuple)
    weights = multi_teacher.weights(tuple(name for name, _ in configs.teachers), settings) if several else (1.0,)
    blocks = heads.RowBlocks(tuple(stream.rows for stream in configs.routes)) if configs.routes else None

    def teacher_nll(teacher_state, batch) -> reductions.SumCount:
      graphdefs, states = (teacher_graphdef, teacher_state) if several else ((teacher_graphdef,), (teacher_state,))
      total, count = 0.0, 0.0
      for index, (weight, graphdef, state) in enumerate(zip(weights, graphdefs, states)):
        if blocks is not None and not blocks.rows[index]:
          continue  # a routed teacher without rows
        rows = batch if blocks is None else jax.tree.map(lambda x, i=index: blocks.take(x, i), batch)
        nll, rows_count = student_objective.student_cross_entropy(
            nnx.merge(graphdef, state), rows, settings, chunked=chunked
        )
        if blocks is not None:  # each row scored by its own teacher: sums and counts add
          total, count = total + nll, count + rows_count
        else:
          total, count = (total + weight * nll if several else nll), rows_count
      return total, count

    return teacher_nll


def match_batch(built: dict, data_batch: dict) -> dict:
  """``built`` with the dataset batch's keys, dtypes and shardings, so the compiled train step is reused."""
  if set(built) != set(data_batch):
    extra = sorted(set(data_batch) - set(built))
    raise ValueError(
        f"the dataset batch has keys {extra} that a sampled batch cannot fill; on-policy distillation supports"
        " text batches (inputs, targets, their positions and segmentations). Set distill_on_policy_fraction=0."
    )
  return {
      key: jax.device_put(value.astype(data_batch[key].dtype), getattr(data_batch[key], "sharding", None))
      for key, value in built.items()
  }
