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


"""Worker side: build one variant's compiled step, report what XLA says about it, then run steps on request.

A worker is ``tools/bench_distill.py --worker VARIANT`` (see :mod:`tools.bench.runner` for the parent's side of
the line protocol). It alone imports JAX and MaxText.
"""

import contextlib
import dataclasses
import json
import os
import sys
import time
import typing

from absl import logging


@dataclasses.dataclass
class StepBench:
  """A compiled training step ready to time, with what XLA says about it."""

  run: object  # () -> None: one step, blocking until its outputs are ready
  compiled: typing.Any  # jax / nnx Compiled: memory_analysis(), as_text()
  compile_s: float
  keep_alive: typing.Any = None  # contexts (an ExitStack) that must outlive the timing


def _compile(jitted, *args):
  started = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - started


def _student_setup(student_config):
  """MaxText's own train setup for the student, as the plugin's trainer calls it."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from maxtext.utils import train_utils  # pylint: disable=import-outside-toplevel

  _, _, state_shardings, _, mesh, lr_schedule, _, data_loader, _, _, state = train_utils.setup_train_loop(
      student_config, recorder=None
  )
  graphdef, state = nnx.split(state)
  return graphdef, state, state_shardings, mesh, lr_schedule, data_loader.load_next_batch()


def _mesh_context(mesh, config) -> contextlib.ExitStack:
  import jax  # pylint: disable=import-outside-toplevel
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel

  stack = contextlib.ExitStack()
  stack.enter_context(jax.set_mesh(mesh))
  stack.enter_context(nn_partitioning.axis_rules(config.logical_axis_rules))
  return stack


def _stepping(compiled, state, *inputs):
  """``run()`` that feeds the donated state back in, as a training loop does."""
  import jax  # pylint: disable=import-outside-toplevel

  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], *inputs)
    jax.block_until_ready((holder[0], metrics))

  return run


def build_ours(argv: list[str], impl: str) -> StepBench:
  """The plugin's compiled step, built as ``trainer.train`` builds it."""
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.configuration import config as config_lib  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.training import step as step_lib  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel

  configs = config_lib.build(argv + [f"distill_loss_impl={impl}"])
  student = configs.student
  graphdef, state, state_shardings, mesh, lr_schedule, batch = _student_setup(student)
  stack = _mesh_context(mesh, student)
  teacher_graphdef, teacher_state = trainer_lib.build_teacher(configs.teacher, mesh)
  options = trainer_lib.step_options(configs, offline_tail=None)  # the step options a run compiles with
  if options.chunked_loss != (impl == "chunked"):
    raise RuntimeError(f"distill_loss_impl={impl} resolved to chunked_loss={options.chunked_loss}")
  jitted = jax.jit(
      step_lib.make_train_step(graphdef, teacher_graphdef, options, lr_schedule),
      donate_argnums=(0,),
      out_shardings=(state_shardings, None),
  )
  compiled, compile_s = _compile(jitted, state, teacher_state, batch)
  return StepBench(_stepping(compiled, state, teacher_state, batch), compiled, compile_s, stack)


def build_floor(argv: list[str]) -> StepBench:
  """MaxText's pre-training ``train_step`` (student, plain CE, optimizer update) plus a teacher forward pass."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from maxtext.trainers.pre_train import train as pretrain  # pylint: disable=import-outside-toplevel
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import sharding  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.configuration import config as config_lib  # pylint: disable=import-outside-toplevel

  configs = config_lib.build(argv)  # only for the two MaxText configs of the shared YAML
  student = configs.student
  graphdef, state, state_shardings, mesh, _, batch = _student_setup(student)
  params_shardings, state_shardings = sharding.maybe_update_params_sharding_with_opt(student, state_shardings)
  stack = _mesh_context(mesh, student)
  teacher_graphdef, teacher_state = nnx.split(model_creation_utils.from_pretrained(configs.teacher, mesh=mesh))

  def floor_step(state, teacher_state, batch):
    teacher = nnx.merge(teacher_graphdef, teacher_state)
    teacher_logits = teacher(
        decoder_input_tokens=batch["inputs"],
        decoder_positions=batch["inputs_position"],
        decoder_segment_ids=batch["inputs_segmentation"],
        enable_dropout=False,
    )
    new_state, metrics = pretrain.train_step(graphdef, student, state_shardings, params_shardings, state, dict(batch))
    # One cheap reduction keeps the teacher's whole forward, logits included, in the program.
    metrics["scalar"]["teacher/max_logit"] = jnp.max(teacher_logits)
    return new_state, metrics

  jitted = jax.jit(floor_step, donate_argnums=(0,), out_shardings=(state_shardings, None))
  compiled, compile_s = _compile(jitted, state, teacher_state, batch)
  return StepBench(_stepping(compiled, state, teacher_state, batch), compiled, compile_s, stack)


def upstream_bench(step) -> StepBench:
  """Upstream's step as Tunix calls it; memory from lowering the same ``nnx.jit``."""
  import jax  # pylint: disable=import-outside-toplevel

  started = time.perf_counter()
  compiled = step.lower().compile()
  compile_s = time.perf_counter() - started
  return StepBench(lambda: jax.block_until_ready(step.run()), compiled, compile_s)


class WorkerChannel:
  """JSON lines to the parent on the original stdout; everything else printed goes to stderr."""

  def __init__(self):
    sys.stdout.flush()
    self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

  def send(self, **message) -> None:
    self._out.write(json.dumps(message) + "\n")
    self._out.flush()

  @staticmethod
  def receive() -> list[str]:
    line = sys.stdin.readline()
    return line.split() if line else ["quit"]


def compiled_stats(compiled) -> dict:
  """XLA's buffer sizes of the compiled step: ``temp_bytes`` (scratch), ``argument_bytes``, ``output_bytes``..."""
  memory = compiled.memory_analysis()
  return {f"{k}_bytes": int(getattr(memory, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output", "alias")}


def serve(channel: WorkerChannel, bench: StepBench) -> None:
  """Warm up, report, then run steps on request until told to quit."""
  import resource  # pylint: disable=import-outside-toplevel

  started = time.perf_counter()
  bench.run()
  first_step_s = time.perf_counter() - started
  channel.send(ready=True, compile_s=bench.compile_s, first_step_s=first_step_s, **compiled_stats(bench.compiled))
  while True:
    command = channel.receive()
    if command[0] == "run":
      times = []
      for _ in range(int(command[1])):
        started = time.perf_counter()
        bench.run()
        times.append(time.perf_counter() - started)
      channel.send(times=times)
    else:
      channel.send(maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
      return


def worker_main(args) -> int:
  """Entry of a worker process (``--worker VARIANT``)."""
  channel = WorkerChannel()
  logging.use_absl_handler()
  logging.set_verbosity(logging.WARNING)
  argv = ["train_distill", args.yaml, f"run_name={args.worker}", f"base_output_directory={args.run_dir}"]
  argv += args.set or []
  try:
    if args.worker == "upstream":
      from tools import upstream_compat  # pylint: disable=import-outside-toplevel

      upstream_compat.serve_upstream_step(argv, lambda step: serve(channel, upstream_bench(step)))
    elif args.worker == "floor":
      serve(channel, build_floor(argv))
    else:
      serve(channel, build_ours(argv, args.worker.removeprefix("ours_")))
  except Exception as e:  # pylint: disable=broad-exception-caught
    logging.exception("worker %s failed", args.worker)
    channel.send(error=f"{type(e).__name__}: {e}"[:2000])
    return 1
  return 0
