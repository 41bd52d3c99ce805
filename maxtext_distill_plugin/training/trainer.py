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

"""Online distillation trainer: thin orchestration over MaxText.

MaxText provides the mesh, the student's model, optimizer (learning-rate
schedule, warmup, weight decay), train-state sharding, checkpoint manager and
restore, and the input pipeline (``train_utils.setup_train_loop``), and the
teacher (``model_creation_utils.from_pretrained``). The plugin adds the
compiled distillation step (:mod:`step`), the metrics (:mod:`metrics_logger`)
and the batch sources (:mod:`sources`): the loop asks its source for each
step's batch and does not know whether it came from the dataset, a teacher
cache or the sampler.

Why the loop is owned here rather than Tunix's ``PeftTrainer``: with the
released ``google-tunix`` 0.1.7 the trainer's checkpointing writes Tunix's own
layout (a distilled student must load through MaxText's
``load_parameters_path``), its step counter advances per micro-batch (the spec
needs schedules on the optimizer step), and it cannot restore MaxText's data
iterator. Those are exactly the behaviours the spec requires, so this loop
reuses MaxText's checkpoint manager and keeps the step count itself.
"""

import itertools
import time

from absl import logging
from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax

from maxtext_distill_plugin.configuration import multi_teacher
from maxtext_distill_plugin.model import checkpoint_aux
from maxtext_distill_plugin.model import features
from maxtext_distill_plugin.student import freezing
from maxtext_distill_plugin.student import student_init
from maxtext_distill_plugin.training import metrics_logger
from maxtext_distill_plugin.training import objective_params
from maxtext_distill_plugin.training import on_policy
from maxtext_distill_plugin.training import run_guard
from maxtext_distill_plugin.training import run_record
from maxtext_distill_plugin.training import step as step_lib
from maxtext_distill_plugin.training.sources import choice as sources


class TrainResult:
  """What a finished run leaves behind (for the demo and tests)."""

  def __init__(self, last_step, history, checkpoint_dir, tensorboard_dir, *, preempted: bool = False):
    self.last_step = last_step
    self.preempted = preempted
    self.history = history
    self.checkpoint_dir = checkpoint_dir
    self.tensorboard_dir = tensorboard_dir


def build_teacher(teacher_config, mesh):
  """The frozen teacher: MaxText model with the teacher's weights, parameters only, no optimizer."""
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel

  path = teacher_config.load_parameters_path
  logging.info("Loading teacher %s from %s", teacher_config.model_name, path)
  teacher = model_creation_utils.from_pretrained(teacher_config, mesh=mesh)
  # MaxText restores the parameters only; variables such as DeepSeek's router bias live in the checkpoint's nnx_aux.
  checkpoint_aux.restore_extras(teacher, path)
  checkpoint_aux.check_materialized(teacher, "teacher", path)
  return nnx.split(teacher)


def build_teachers(configs, mesh):
  """``(graphdef, state)`` of the frozen teacher, or of several (``teachers:``) as a tuple of graphdefs and one of
  states in ``teachers:`` order."""
  if not configs.teachers:
    return build_teacher(configs.teacher, mesh)
  built = [build_teacher(config, mesh) for _, config in configs.teachers]
  return tuple(graphdef for graphdef, _ in built), tuple(state for _, state in built)


def _without_parameters_path(config):
  """``config`` with ``load_parameters_path=""``: MaxText builds a fresh student and the trainer loads the weights."""
  from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel

  pydantic_config = getattr(config, "_pydantic_config", config)
  return pyconfig.HyperParameters(pydantic_config.model_copy(update={"load_parameters_path": ""}))


def step_options(configs, offline_tail: str | None, chunked_loss: bool | None = None) -> step_lib.StepOptions:
  """The compiled step's settings for ``configs`` (the planner compiles with the same ones); ``chunked_loss`` None
  resolves ``distill_loss_impl`` as a run does."""
  student_config, settings = configs.student, configs.settings
  teacher_configs = [config for _, config in configs.teachers] or [configs.teacher]
  if chunked_loss is None:
    chunked_loss = step_lib.use_chunked_loss(settings, student_config, *teacher_configs)
  names = tuple(name for name, _ in configs.teachers or configs.caches)
  return step_lib.StepOptions(
      settings=settings,
      total_steps=int(student_config.steps),
      accumulation_steps=int(student_config.gradient_accumulation_steps),
      clip_threshold=float(student_config.gradient_clipping_threshold),
      enable_dropout=bool(student_config.enable_dropout),
      chunked_loss=chunked_loss,
      offline_tail=offline_tail,
      train_rows=int(student_config.micro_batch_size_to_train_on),
      eval_rows=int(student_config.micro_batch_size_to_eval_on),
      trainable_patterns=freezing.trainable_patterns(student_config),
      diagnostics_every=int(student_config.log_period),  # the diagnostics of the step that ends each logging window
      teacher_names=names,
      teacher_weights=multi_teacher.weights(names, settings) if names else (),
      route_rows=tuple(stream.rows for stream in configs.routes),
  )


def train(configs) -> TrainResult:
  """Runs the distillation described by ``configs`` (a :class:`config.DistillConfigs`)."""
  from maxtext.common import checkpointing  # pylint: disable=import-outside-toplevel
  from maxtext.utils import exceptions  # pylint: disable=import-outside-toplevel
  from maxtext.utils import train_utils  # pylint: disable=import-outside-toplevel

  student_config, settings = configs.student, configs.settings
  if settings.extract_features:
    features.ensure_out_projection_sow()
  # The tokenizer's EOS is read before any model is built, so a tokenizer without one is refused first.
  special_ids = on_policy.special_ids(student_config) if settings.on_policy else None

  # A student checkpoint with non-parameter variables (DeepSeek's router bias) is beyond MaxText's params-only loader.
  student_weights_path = checkpoint_aux.student_parameters_path(student_config)
  setup_config = _without_parameters_path(student_config) if student_weights_path else student_config
  _, checkpoint_manager, state_shardings, _, mesh, lr_schedule, data_iterator, data_loader, _, eval_iterator, state = (
      train_utils.setup_train_loop(setup_config, recorder=None)
  )
  start_step = int(state.optimizer.step.get_value())
  if student_weights_path and start_step == 0:  # a resumed run has its own checkpoint, bias included
    with jax.set_mesh(mesh), nn_partitioning.axis_rules(student_config.logical_axis_rules):
      checkpoint_aux.load_student_weights(state.model, student_config, student_weights_path)
  state_graphdef, state = nnx.split(state)
  if configs.offline:
    teacher_graphdef = teacher_state = None
  else:
    with jax.set_mesh(mesh), nn_partitioning.axis_rules(student_config.logical_axis_rules):
      teacher_graphdef, teacher_state = build_teachers(configs, mesh)
  data = sources.open_sources(
      configs,
      mesh,
      data_loader,
      eval_iterator,
      state_graphdef=state_graphdef,
      state=state,
      teacher_graphdef=teacher_graphdef,
      special_ids=special_ids,
  )
  data.train.skip_to(start_step)
  run_record.write(configs, configs.argv)
  first_teacher = teacher_state[0] if configs.teachers else teacher_state  # the one student_init copies from
  param_counts = student_init.apply_at_start(configs, state, first_teacher, start_step)

  options = step_options(configs, data.offline_tail)
  logging.info("Distillation loss: %s", "chunked (from hidden states)" if options.chunked_loss else "dense (full logits)")
  # Parameters of the objective's own (a learned feature projection) ride beside the student's state.
  objective = objective_params.start(configs, mesh, lr_schedule, start_step)
  train_step = objective.train_step(
      step_lib.make_train_step(state_graphdef, teacher_graphdef, options, lr_schedule, objective_tx=objective.tx),
      state_shardings,
  )
  eval_step = objective.eval_step(step_lib.make_eval_step(state_graphdef, teacher_graphdef, options))
  logger = metrics_logger.MetricsLogger(
      student_config.tensorboard_dir,
      options.total_steps,
      metrics_file=student_config.metrics_file,
      run_constants=metrics_logger.RunConstants.for_run(
          student_config,
          metrics_logger.running_teachers(configs),
          param_counts,
          metrics_logger.teacher_row_shares(configs),
      ),
  )
  if start_step > 0:
    logging.info("Resumed from checkpoint: continuing at step %d of %d", start_step, options.total_steps)

  preemption, guard = run_guard.PreemptionFlag(), run_guard.FiniteGuard()
  guard.last_checkpoint = start_step - 1 if start_step > 0 else None
  last_step = start_step - 1

  def save(step=None):
    guard.check()  # never checkpoint parameters that a non-finite loss produced
    try:
      checkpointing.maybe_save_checkpoint(checkpoint_manager, state, student_config, data_iterator, step)
    except exceptions.StopTraining:  # MaxText saw JAX's preemption sync point: the save is written and awaited
      pass
    objective.save(checkpoint_manager, step if step is not None else int(state.optimizer.step) - 1)

  try:
    with jax.set_mesh(mesh), nn_partitioning.axis_rules(student_config.logical_axis_rules):
      for step in range(start_step, options.total_steps):
        timed = _ends_log_window(step, student_config.log_period, options.total_steps)
        state, metrics = data.train.step(train_step, state, teacher_state, timed=timed)
        logger.add(metrics)
        guard.add(step, metrics)
        last_step = step
        if step % student_config.checkpoint_period == 0:
          save(step)
          guard.last_checkpoint = step
        if _ends_log_window(step, student_config.log_period, options.total_steps):
          guard.check()
          logger.flush(step)
        if _eval_due(student_config, data.eval_batches, step):
          _evaluate(eval_step, state, teacher_state, data, student_config, logger, step, options.eval_rows)
        if preemption.should_stop(step):
          logging.warning(
              "Preempted: all %d processes stop after step %d; saving a checkpoint and exiting.",
              jax.process_count(),
              step,
          )
          break
      logger.flush(last_step)
      if last_step >= start_step:
        save()
      if checkpoint_manager is not None:
        checkpointing.wait_until_finished(checkpoint_manager)
  except run_guard.NonFiniteLossError:
    # The bad state was never saved, but an async save of the last good one may still be in flight: finish it.
    if checkpoint_manager is not None:
      checkpointing.wait_until_finished(checkpoint_manager)
    raise
  finally:
    preemption.restore()
  logger.close()
  checkpoint_dir = str(student_config.checkpoint_dir) if student_config.enable_checkpointing else None
  return TrainResult(
      last_step, logger.history, checkpoint_dir, student_config.tensorboard_dir, preempted=preemption.requested
  )


def _ends_log_window(step: int, log_period: int, total_steps: int) -> bool:
  """Whether optimizer ``step`` ends a logging window (the step's own diagnostics follow the same rule in the
  compiled step: :func:`step.diagnostics_due`)."""
  return (step + 1) % log_period == 0 or step + 1 == total_steps


def _eval_due(config, eval_iterator, step: int) -> bool:
  return eval_iterator is not None and config.eval_interval > 0 and (step + 1) % config.eval_interval == 0


def _evaluate(eval_step, state, teacher_state, data, config, logger, step, rows: int | None) -> None:
  """Scores the held-out batches from their first one: every eval sees the same batches, as in MaxText.

  The training source may add metrics of its own: on-policy, the student also completes each held-out prompt
  greedily and the teacher scores the completions (``eval/teacher_nll_of_student_samples``).
  """
  limit = config.eval_steps if config.eval_steps > 0 else None
  eval_batches = data.eval_batches
  totals = None
  started = time.perf_counter()
  # Wrappers such as MaxText's context-parallel reorder do not start again when iterated; an explicit reset does.
  if hasattr(eval_batches, "reset"):
    eval_batches.reset()
  for batch in itertools.islice(eval_batches, limit):
    metrics = {**eval_step(state, teacher_state, batch), **data.train.eval_metrics(state, teacher_state, batch, rows)}
    totals = metrics if totals is None else jax.tree.map(jax.numpy.add, totals, metrics)
    if limit is None and config.dataset_type == "synthetic":
      break
  if totals is not None:
    logger.write_eval(step, totals)
    logging.info("eval took %.1fs", time.perf_counter() - started)


def run(configs) -> int:
  """CLI entry: trains and returns the process exit code."""
  try:
    result = train(configs)
  except run_guard.NonFiniteLossError as e:
    logging.error("%s", e)
    return run_guard.EXIT_NON_FINITE
  except RuntimeError as e:
    if "already exists at step" not in str(e):  # MaxText's check that the run is already complete
      raise
    logging.info("Nothing to do: %s", e)
    print(f"maxtext-distill: this run is already complete ({configs.student.steps} steps); raise steps to go on.")
    return 0
  logging.info(
      "Finished at step %d. Checkpoints: %s  TensorBoard: %s",
      result.last_step + 1,
      result.checkpoint_dir,
      result.tensorboard_dir,
  )
  return 0
