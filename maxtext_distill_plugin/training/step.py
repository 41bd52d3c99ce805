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

"""The compiled distillation step: teacher forward, student forward and backward, update.

Pure functions over NNX graphdefs and states; the trainer jits them once. The
schedule step is the optimizer step (read from the state inside the step), so
gradient accumulation does not change the schedules. Micro-batches are scanned
and their token *sums* accumulated; dividing once by the total valid-token
count makes accumulation N with batch/N equal to one full batch.
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import reductions
from maxtext_distill_plugin.model import lean_forward
from maxtext_distill_plugin.student import freezing
from maxtext_distill_plugin.teachers import ensemble
from maxtext_distill_plugin.teachers import kinds
from maxtext_distill_plugin.training import student_objective


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """Static settings of the compiled step."""

  settings: DistillSettings
  total_steps: int
  accumulation_steps: int = 1
  clip_threshold: float = 0.0
  enable_dropout: bool = False
  chunked_loss: bool = False  # see use_chunked_loss
  offline_tail: str | None = None  # None: online teacher; else the cached teacher's tail handling
  # Rows trained (per micro-batch) and evaluated on, MaxText's micro_batch_size_to_{train,eval}_on: fewer than loaded
  # when per_device_batch_size < 1 or expansion_factor_real_data > 1. None: every loaded row.
  train_rows: int | None = None
  eval_rows: int | None = None
  trainable_patterns: tuple[str, ...] | None = None  # freezing: MaxText trainable_parameters_mask; None: all train
  # The online diagnostics (metric_names.ONLINE_DIAGNOSTICS) cost full-vocabulary passes, so a train step computes them
  # only where step + 1 is a multiple of this (the trainer passes log_period: the step that ends a logging window)
  # or the last step; 1: every step.
  diagnostics_every: int = 1
  # Several teachers (teachers.ensemble): their names and weights, in the order of the tuple of teacher states.
  teacher_names: tuple[str, ...] = ()
  teacher_weights: tuple[float, ...] = ()
  # distill_teacher_mixture=route: each teacher's rows per device in every micro-batch (training.sources.routed).
  route_rows: tuple[int, ...] = ()


# "auto" picks the chunked loss from this many student logits per micro-batch on a device (256 MiB in float32).
AUTO_CHUNKED_MIN_LOGITS = 1 << 26


def use_chunked_loss(settings: DistillSettings, student_config, *teacher_configs) -> bool:
  """Resolves ``distill_loss_impl``: whether the step computes the loss from hidden states, tile by tile."""
  if settings.distill_loss_impl == "dense":
    return False
  configs = [student_config, *teacher_configs]
  reasons = [r for r in map(lean_forward.unsupported_reason, filter(None, configs)) if r]
  if settings.distill_loss_impl == "chunked":
    if reasons:
      raise ValueError(f"distill_loss_impl=chunked: {reasons[0]}. Fix: set distill_loss_impl=dense.")
    return True
  # A model with num_vocab_tiling > 1 returns no logits in training: only the chunked loss can run.
  if any(c.num_vocab_tiling > 1 for c in filter(None, configs)):
    return not reasons
  c = student_config
  if c.hardware == "cpu":
    # Measured in docs/benchmarks.md: on the CPU the tiled loss was faster and leaner at every vocabulary size.
    return not reasons
  # per_device_batch_size is already per micro-batch (MaxText loads gradient_accumulation_steps of them per step).
  logits = c.per_device_batch_size * c.max_target_length * c.vocab_size
  return not reasons and logits >= AUTO_CHUNKED_MIN_LOGITS


def teacher_kind(teacher_graphdef, options: StepOptions) -> kinds.Teacher:
  """The teacher the step scores against: the cache's top-k (offline), the frozen model of ``teacher_graphdef``, or
  several (``options.teacher_names``; ``teacher_graphdef`` a tuple of graphdefs)."""
  settings = options.settings
  if options.offline_tail is not None and options.teacher_names:  # one cache per teacher (sources.caches)
    members = tuple(kinds.CachedTeacher(options.offline_tail, f"@{i}") for i in range(len(options.teacher_names)))
    return ensemble.Ensemble(members, options.teacher_names, options.teacher_weights, settings.distill_teacher_mixture)
  if options.offline_tail is not None:
    return kinds.CachedTeacher(options.offline_tail)
  if options.teacher_names:
    return ensemble.Ensemble(
        tuple(kinds.FrozenModel(graphdef, settings) for graphdef in teacher_graphdef),
        options.teacher_names,
        options.teacher_weights,
        settings.distill_teacher_mixture,
        options.route_rows,
    )
  return kinds.FrozenModel(teacher_graphdef, settings)


def diagnostics_due(step, options: StepOptions):
  """Whether the train step at optimizer ``step`` computes the online diagnostics: None (always) or a traced bool."""
  if options.diagnostics_every <= 1:
    return None
  return ((step + 1) % options.diagnostics_every == 0) | (step + 1 >= options.total_steps)


def _split_micro_batches(batch: dict, k: int) -> dict:
  """``[B, ...] -> [k, B // k, ...]``, strided: micro-batch ``i`` holds rows ``i, i + k, i + 2k, ...``.

  The batch axis is sharded in contiguous blocks over the data-parallel devices, so a strided split leaves every
  device with its own rows in every micro-batch (a contiguous split would put each micro-batch on a subset of the
  devices and make XLA move activations between them). MaxText's gradient accumulation splits the same way.
  """

  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows cannot split into gradient_accumulation_steps={k} micro-batches")
    return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)

  return jax.tree.map(split, batch)


def _first_rows(batch: dict, rows: int | None, axis: int = 0) -> dict:
  """The first ``rows`` rows along ``axis`` (all when None): the rows MaxText trains or evaluates on."""
  if rows is None:
    return batch
  return jax.tree.map(lambda x: jax.lax.slice_in_dim(x, 0, min(rows, x.shape[axis]), axis=axis), batch)


def make_train_step(state_graphdef, teacher_graphdef, options: StepOptions, learning_rate_schedule, objective_tx=None):
  """Returns ``train_step(state, teacher_state, batch) -> (state, metrics)``.

  With ``objective_tx`` (the objective owns parameters: ``distill_feature_projection=linear``) it returns
  ``train_step(state, objective, teacher_state, batch) -> (state, objective, metrics)`` instead, ``objective`` the
  ``{"params", "opt_state"}`` tree of :mod:`objective_params`: its parameters get their gradient from the same
  objective and the same update as the student's (one global norm and clipping over both), by ``objective_tx``.
  """
  settings = options.settings
  teacher_model = teacher_kind(teacher_graphdef, options)

  def micro_step(model_graphdef, params, rest, objective_params, teacher_state, micro_batch, weights, diagnose):
    teacher = teacher_model.head(teacher_state, micro_batch, lean=options.chunked_loss)
    if options.chunked_loss and teacher_graphdef is not None:
      # The teachers' forwards end before the student's starts. Otherwise XLA may run the student's forward first
      # and keep its saved activations and bfloat16 weight copies live through the teachers' forwards: compiled for
      # a v5p (docs/scale.md) that cost 3.3 GiB of temporaries with an MoE teacher (row 07, lean above dense) and
      # 1.1 GiB with a dense one (row 05).
      teacher, params = jax.lax.optimization_barrier((teacher, params))

    def objective_sum_fn(p, q):
      model = nnx.merge(model_graphdef, p, rest, copy=True)  # fresh Variables at this trace level (MoE bias state)
      total, count, metrics = student_objective.student_terms(
          model,
          teacher,
          micro_batch,
          weights,
          settings,
          chunked=options.chunked_loss,
          enable_dropout=options.enable_dropout,
          diagnose=diagnose,
          objective_params=q,
      )
      return total, (count, metrics, nnx.state(model, nnx.Not(nnx.Param)))

    value_and_grad = jax.value_and_grad(objective_sum_fn, argnums=(0, 1), has_aux=True)
    (_, (count, metrics, new_rest)), grads = value_and_grad(params, objective_params)
    return grads, count, metrics, new_rest

  def update(state, objective_state, teacher_state, batch):
    from maxtext.utils import max_utils, maxtext_utils  # pylint: disable=import-outside-toplevel

    train_state = nnx.merge(state_graphdef, state)
    step = train_state.optimizer.step.get_value()
    weights = student_objective.scheduled_weights(settings, step, options.total_steps)
    diagnose = diagnostics_due(step, options)
    model_graphdef, params, rest = nnx.split(train_state.model, nnx.Param, ...)
    objective_params = None if objective_state is None else objective_state["params"]
    micro_batches = _first_rows(_split_micro_batches(batch, options.accumulation_steps), options.train_rows, axis=1)

    def micro(rest, micro_batch):
      return micro_step(model_graphdef, params, rest, objective_params, teacher_state, micro_batch, weights, diagnose)

    grads, count, metrics, rest = micro(rest, jax.tree.map(lambda x: x[0], micro_batches))

    def accumulate(carry, micro_batch):
      grads_sum, count_sum, metrics_sum, rest = carry
      g, c, m, rest = micro(rest, micro_batch)
      return (jax.tree.map(jnp.add, grads_sum, g), count_sum + c, reductions.add_pairs(metrics_sum, m), rest), None

    if options.accumulation_steps > 1:
      rest_batches = jax.tree.map(lambda x: x[1:], micro_batches)
      (grads, count, metrics, rest), _ = jax.lax.scan(accumulate, (grads, count, metrics, rest), rest_batches)

    grads, objective_grads = jax.tree.map(lambda g: g / jnp.maximum(count, 1.0), grads)
    grads = freezing.zero_frozen(grads, options.trainable_patterns)  # norm and clipping over trained arrays only
    if objective_state is None:
      grad_norm = max_utils.l2norm_pytree(grads)
      if options.clip_threshold > 0:
        grads = maxtext_utils.apply_gradient_clipping(grads, None, options.clip_threshold)
    else:  # one optimizer step over both: the norm and the clipping see the student's and the objective's gradients
      grad_norm = max_utils.l2norm_pytree((grads, objective_grads))
      if options.clip_threshold > 0:
        grads, objective_grads = maxtext_utils.apply_gradient_clipping(
            (grads, objective_grads), None, options.clip_threshold
        )
      updates, opt_state = objective_tx.update(objective_grads, objective_state["opt_state"], objective_params)
      objective_state = {"params": optax.apply_updates(objective_params, updates), "opt_state": opt_state}
    nnx.update(train_state.model, rest)
    train_state.optimizer.update(train_state.model, grads)
    metrics = dict(metrics)
    metrics.update(objective.schedule_metrics(weights))
    metrics["learning_rate"] = reductions.scalar_pair(learning_rate_schedule(step))
    metrics["grad_norm"] = reductions.scalar_pair(grad_norm)
    return nnx.state(train_state, nnx.Not(nnx.Intermediate)), objective_state, metrics

  if objective_tx is not None:
    return update

  def train_step(state, teacher_state, batch):
    state, _, metrics = update(state, None, teacher_state, batch)
    return state, metrics

  return train_step


def make_eval_step(state_graphdef, teacher_graphdef, options: StepOptions):
  """Returns ``eval_step(state, teacher_state, batch, objective_params=None) -> metrics`` (no update);
  ``objective_params``: the objective's own parameters, as in :func:`student_objective.student_terms`."""
  settings = options.settings
  teacher_model = teacher_kind(teacher_graphdef, options)

  def eval_step(state, teacher_state, batch, objective_params=None):
    train_state = nnx.merge(state_graphdef, state)
    batch = _first_rows(batch, options.eval_rows)
    if options.offline_tail is not None:  # held-out batches carry no cached teacher: the student's CE alone
      return {
          metric_names.EVAL_HARD_LOSS: student_objective.student_cross_entropy(
              train_state.model, batch, settings, chunked=options.chunked_loss
          )
      }
    weights = student_objective.scheduled_weights(settings, train_state.optimizer.step.get_value(), options.total_steps)
    teacher = teacher_model.head(teacher_state, batch, lean=options.chunked_loss)
    _, _, metrics = student_objective.student_terms(
        train_state.model,
        teacher,
        batch,
        weights,
        settings,
        chunked=options.chunked_loss,
        enable_dropout=False,
        objective_params=objective_params,
    )
    return {metric_names.eval_name(name): metrics[name] for name in metric_names.EVAL_METRICS if name in metrics}

  return eval_step
