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

"""The programs a run compiles, built from the product's own code so the planner compiles what a run compiles:
the distillation step (:func:`step.make_train_step`, with the trainer's :func:`trainer.step_options`), the
on-policy sampler (:func:`sampling.make_sampler`), and for comparison the floor: MaxText's own pre-training step
of the student plus one forward of the teacher.
"""

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from maxtext_distill_plugin.model import forward as model_forward
from maxtext_distill_plugin.training import step as step_lib
from maxtext_distill_plugin.training import trainer

STEP_PATHS = ("lean", "dense", "offline")
ALL_PATHS = STEP_PATHS + ("sampler", "floor")


def offline_tail(settings) -> str:
  """The tail handling an offline run uses; ``auto`` assumes a format-2 cache, which knows its tail mass."""
  tail = settings.distill_offline_tail
  return "bucket" if tail == "auto" else tail


def train_step(configs, run, path: str):
  """``(jitted step, its abstract arguments)`` for ``path`` ``lean`` / ``dense`` (online) or ``offline``."""
  if path == "offline":
    options = trainer.step_options(configs, offline_tail(configs.settings))
  else:
    options = trainer.step_options(configs, None, chunked_loss=path == "lean")
  fn = step_lib.make_train_step(run.state_graphdef, run.teacher_graphdef, options, run.learning_rate_schedule)
  jitted = jax.jit(fn, donate_argnums=(0,), out_shardings=(run.state_shardings, None))
  return jitted, (run.state, run.teacher_state, run.batch)


def sampler(configs, run):
  """The on-policy sampler over the whole loaded batch, from the student (or the teacher when it writes)."""
  from maxtext_distill_plugin.configuration import on_policy_checks  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.model import sampling  # pylint: disable=import-outside-toplevel

  s = configs.settings
  teacher_writes = bool(s.distill_teacher_generated)
  prompt_len = on_policy_checks.prompt_bucket(configs.student, s)
  rows = int(run.batch["inputs"].shape[0])
  if teacher_writes:
    graphdef, model_state, config = run.teacher_graphdef, run.teacher_state, configs.teacher
  else:
    model = nnx.merge(run.state_graphdef, run.state).model
    graphdef, model_state, config = nnx.graphdef(model), nnx.state(model), configs.student
  options = sampling.SampleOptions(
      max_new_tokens=s.distill_sample_max_new_tokens,
      temperature=s.distill_sample_temperature,
      top_p=s.distill_sample_top_p,
      top_k=s.distill_sample_top_k,
      eos_id=1,
      pad_id=0,
  )
  made = sampling.make_sampler(graphdef, config, options, prompt_len, rows, mesh=run.mesh)
  rows_spec = run.data_sharding.spec[0] if len(run.data_sharding.spec) else None
  prompts = jax.ShapeDtypeStruct((rows, prompt_len), jnp.int32, sharding=run.data_sharding)
  lengths = jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=NamedSharding(run.mesh, PartitionSpec(rows_spec)))
  key = jax.eval_shape(lambda: jax.random.key(0))
  return jax.jit(made.fn), (model_state, prompts, lengths, key)


def floor(configs, run):
  """MaxText's pre-training step of the student and a forward of each teacher, in one program: what any distillation
  step must at least do. The teachers' logits are reduced to a scalar, so no program needs to keep them."""
  from maxtext.trainers.pre_train import train as pre_train  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import sharding  # pylint: disable=import-outside-toplevel

  student = configs.student
  params_shardings, state_shardings = sharding.maybe_update_params_sharding_with_opt(student, run.state_shardings)
  input_shardings = sharding.build_zero1_input_state_mesh_shardings(student, state_shardings, params_shardings)
  pre_train_step, _, out_shardings, _, _ = maxtext_utils.get_functional_train_with_signature(
      pre_train.train_step, run.data_sharding, input_shardings, run.state_graphdef, student, params_shardings
  )
  tokens = {k: v for k, v in run.batch.items() if not k.startswith("teacher_")}
  settings = configs.settings
  teacher_graphdef = run.teacher_graphdef

  # Several teachers (``teachers:``): every one runs its forward on the whole batch, as in the step.
  several = isinstance(teacher_graphdef, tuple)

  def floor_step(state, teacher_state, batch):
    outputs = pre_train_step(state, batch)
    if teacher_graphdef is None:
      return outputs, jnp.zeros(())
    members = zip(teacher_graphdef, teacher_state) if several else ((teacher_graphdef, teacher_state),)
    reduced = jnp.zeros((), jnp.float32)
    for graphdef, member_state in members:
      teacher = nnx.merge(graphdef, member_state)
      logits, _ = model_forward.forward(teacher, batch, settings=settings, enable_dropout=False, teacher=True)
      reduced += jnp.sum(logits.astype(jnp.float32))
    return outputs, reduced

  jitted = jax.jit(floor_step, donate_argnums=(0,), out_shardings=(out_shardings, None))
  return jitted, (run.state, run.teacher_state, tokens)
