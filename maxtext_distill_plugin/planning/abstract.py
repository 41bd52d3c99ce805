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

"""Abstract inputs of the step: the student's train state and batch as MaxText's AOT compile builds them, the
frozen teacher from MaxText's abstract model, and the offline cache's fields. No array is ever materialised and no
checkpoint is read: every leaf is a ``jax.ShapeDtypeStruct`` carrying the sharding a run would give it.
"""

import dataclasses
import math
from typing import Any

from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from maxtext_distill_plugin.loss import sparse_losses


@dataclasses.dataclass
class AbstractRun:
  """Everything the step is lowered on, for one set of configs on one mesh."""

  mesh: Any
  state_graphdef: Any
  state: Any
  state_shardings: Any
  batch: dict
  data_sharding: Any
  learning_rate_schedule: Any
  # One teacher: its graphdef and state; several (``teachers:``): tuples of them in ``teachers:`` order, as the
  # trainer's ``build_teachers`` hands them to the step.
  teacher_graphdef: Any = None
  teacher_state: Any = None
  teacher_names: tuple[str, ...] = ()


def build(configs, mesh, offline_tail: str | None) -> AbstractRun:
  """Abstract student state and batch (``train_compile.get_shaped_inputs``), teacher (``create_nnx_abstract_model``)."""
  from maxtext.trainers.pre_train import train_compile  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import sharding  # pylint: disable=import-outside-toplevel

  student = configs.student
  (state, batch), _, state_shardings, _, state_graphdef = train_compile.get_shaped_inputs(mesh, student)
  data_sharding = sharding.get_input_data_sharding(student, mesh)
  run = AbstractRun(
      mesh=mesh,
      state_graphdef=state_graphdef,
      state=state,
      state_shardings=state_shardings,
      batch=dict(batch),
      data_sharding=data_sharding,
      learning_rate_schedule=maxtext_utils.create_learning_rate_schedule(student),
  )
  if offline_tail is not None:
    run.batch.update(offline_fields(run.batch["inputs"], configs.settings, offline_tail))
  elif configs.teacher is not None:
    members = configs.teachers or (("teacher", configs.teacher),)
    split = []
    with jax.set_mesh(mesh), nn_partitioning.axis_rules(student.logical_axis_rules):
      for _, teacher_config in members:
        _, teacher = model_creation_utils.create_nnx_abstract_model(teacher_config, mesh)
        split.append(nnx.split(teacher))
    run.teacher_names = tuple(name for name, _ in members)
    if configs.teachers:
      run.teacher_graphdef, run.teacher_state = tuple(g for g, _ in split), tuple(s for _, s in split)
    else:
      run.teacher_graphdef, run.teacher_state = split[0]
  return run


def offline_fields(tokens, settings, tail: str) -> dict:
  """The cache's per-token teacher fields as the offline batch carries them (``teacher_cache.format.TEACHER_FIELDS``)."""
  rows, length = tokens.shape
  k, spec = int(settings.distill_top_k), tokens.sharding.spec

  def field(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(tokens.sharding.mesh, PartitionSpec(*spec)))

  fields = {
      "teacher_topk_ids": field((rows, length, k), jnp.int32),
      "teacher_topk_logprobs": field((rows, length, k), jnp.float32),
      "teacher_tail_logmass": field((rows, length), jnp.float32),
  }
  if tail == "bucket":  # a format-2 cache also stores the tail's Renyi entropies
    fields["teacher_tail_renyi"] = field((rows, length, len(sparse_losses.TAIL_RENYI_ORDERS)), jnp.float32)
  return fields


def _itemsize(dtype) -> int:
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return 8  # a threefry key: two uint32 words
  return jnp.dtype(dtype).itemsize


def per_device_bytes(tree) -> int:
  """Bytes one device holds of the abstract arrays in ``tree`` (each leaf's shard shape under its sharding)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    if not hasattr(leaf, "shape"):
      continue
    shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
    total += math.prod(shape) * _itemsize(leaf.dtype)
  return total


def teacher_params(run: AbstractRun) -> dict[str, int]:
  """Per-device bytes of each teacher's parameters, by name in ``teachers:`` order (``teacher`` for the one teacher;
  empty offline). Their RNG state is left out: a few bytes."""
  if run.teacher_state is None:
    return {}
  states = run.teacher_state if isinstance(run.teacher_state, tuple) else (run.teacher_state,)
  return {name: per_device_bytes(nnx.filter_state(s, nnx.Param)) for name, s in zip(run.teacher_names, states)}


def state_parts(run: AbstractRun) -> dict[str, int]:
  """Per-device bytes of the student's parameters, its optimizer state (with the step counter), and the teachers'
  parameters (all of them: every teacher is an argument of the step)."""
  state = run.state
  params = nnx.filter_state(state["model"], nnx.Param) if "model" in state else state
  model = per_device_bytes(state["model"]) if "model" in state else 0
  return {
      "student_params": per_device_bytes(params),
      "student_other": model - per_device_bytes(params),  # non-parameter model state (e.g. MoE router biases)
      "optimizer_state": per_device_bytes(state) - model,
      "teacher_params": sum(teacher_params(run).values()),
  }
