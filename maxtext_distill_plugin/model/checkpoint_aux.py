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

"""A model's persistent variables that are not parameters, restored from MaxText's own checkpoints.

MaxText 0.2.5 writes a train state as ``params/params/...`` (the ``nnx.Param``
weights), ``opt_state``, ``step`` and, for every other persistent variable, an
``nnx_aux/model/...`` subtree. DeepSeek's router bias with ``routed_bias: true``
(``moe.MoEBiasVar``) is such a variable. Its two loaders of
``load_parameters_path`` read only ``params``:

* ``model_creation_utils.from_pretrained`` (the teacher) first frees every
  persistent array of the fresh model, then writes back what it restored, so the
  bias stays a deleted array and the first step fails with
  ``Array has been deleted``;
* ``checkpointing.load_params_from_path`` (the student, through
  ``train_utils.setup_train_loop``) asks for the bias and refuses the
  checkpoint because it is missing from ``params``.

:func:`restore_extras` reads those variables from ``nnx_aux/model`` into a built
model; :func:`student_parameters_path` tells the trainer when the student's
checkpoint needs the same (the trainer then loads it itself, parameters through
MaxText's loader and the rest here). :func:`check_materialized` refuses a model
left with a deleted array, naming the variable, instead of failing in the step.
"""

from absl import logging
from flax import nnx
import jax

AUX_KEY = "nnx_aux"
_TRANSIENT = (nnx.RngState, nnx.Cache, nnx.Intermediate, nnx.BatchStat)


def _is_extra(_, variable) -> bool:
  """A persistent variable that MaxText does not store under ``params`` (nor regenerates, as RNG state)."""
  return isinstance(variable, nnx.Variable) and not isinstance(variable, (nnx.Param, *_TRANSIENT))


def _path_name(path) -> str:
  return "/".join(str(k) for k in path)


def stored_extras(checkpoint_path: str) -> dict[tuple, object]:
  """``{model path: array metadata}`` of the checkpoint's ``nnx_aux/model`` subtree less RNG streams, from its
  metadata only."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  try:
    metadata = ocp.PyTreeCheckpointer().metadata(checkpoint_path)
  except (FileNotFoundError, ValueError) as e:
    logging.info("maxtext-distill: no readable metadata at %s (%s); no non-parameter variables read.", checkpoint_path, e)
    return {}
  tree = getattr(metadata, "item_metadata", metadata)
  tree = getattr(tree, "tree", tree)
  aux = tree.get(AUX_KEY, {}) if hasattr(tree, "get") else {}
  model = aux.get("model", {}) if hasattr(aux, "get") else {}
  if not model:
    return {}
  flat = nnx.traversals.flatten_mapping(dict(model), is_leaf=lambda _, x: not hasattr(x, "items"))
  # Every MaxText checkpoint stores the modules' RNG streams (``.../rngs/<stream>/{key,count}``) here too; they are
  # regenerated on load, never restored.
  return {tuple(str(k) for k in path): value for path, value in flat.items() if "rngs" not in map(str, path)}


def restore_extras(model: nnx.Module, checkpoint_path: str) -> list[str]:
  """Writes the checkpoint's ``nnx_aux/model`` values into ``model``'s matching non-parameter variables.

  Only variables the checkpoint holds are read (a variable it lacks keeps its value, and
  :func:`check_materialized` catches one that was freed). Returns the restored paths.

  Raises:
    ValueError: a stored variable's shape differs from the model's.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  stored = stored_extras(checkpoint_path)
  if not stored:
    return []
  variables = {tuple(str(k) for k in path): var for path, var in nnx.to_flat_state(nnx.state(model, _is_extra))}
  wanted = {path: var for path, var in variables.items() if path in stored}
  if not wanted:
    return []
  for path, var in wanted.items():
    stored_shape = tuple(getattr(stored[path], "shape", ()))
    if stored_shape != tuple(var.get_value().shape):
      raise ValueError(
          f"{checkpoint_path}: {AUX_KEY}/model/{_path_name(path)} has shape {stored_shape} but the model's"
          f" {type(var).__name__} has {tuple(var.get_value().shape)}: the checkpoint was written for another model"
          " shape; use the config it was trained with."
      )
  # A freed array still knows its shape, dtype and sharding: enough to build the restore target.
  flat_target = {
      path: jax.ShapeDtypeStruct(var.get_value().shape, var.get_value().dtype, sharding=var.get_value().sharding)
      for path, var in wanted.items()
  }
  target = {AUX_KEY: {"model": nnx.traversals.unflatten_mapping(flat_target)}}
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  restored = checkpointer.restore(
      checkpoint_path,
      item=target,
      transforms={},  # read this subtree only; parameters and optimizer state stay on disk
      restore_args=ocp.checkpoint_utils.construct_restore_args(target),
  )
  values = nnx.traversals.flatten_mapping(restored[AUX_KEY]["model"])
  for path, var in wanted.items():
    var.set_value(values[path])
  names = sorted(_path_name(path) for path in wanted)
  logging.info("maxtext-distill: restored %d non-parameter variables from %s: %s", len(names), checkpoint_path, names)
  return names


def check_materialized(model: nnx.Module, role: str, checkpoint_path: str) -> None:
  """Raises ``ValueError`` naming each persistent variable of ``model`` whose array was freed and not restored."""
  missing = []
  for path, var in nnx.to_flat_state(nnx.state(model, _is_extra)):
    value = var.get_value()
    if isinstance(value, jax.Array) and value.is_deleted():
      missing.append(f"{type(var).__name__} {_path_name(path)}")
  if missing:
    raise ValueError(
        f"The {role}'s checkpoint {checkpoint_path} holds no value for {', '.join(missing)} (neither under"
        f" params nor {AUX_KEY}/model). Fix: load a checkpoint written for this model config (the same routed_bias"
        " and MoE shape), e.g. by MaxText's pre-training of it."
    )


def student_parameters_path(student_config) -> str:
  """The student's ``load_parameters_path`` when its checkpoint holds non-parameter variables, else ``""``.

  MaxText's params-only loader cannot restore such a checkpoint (it asks for the bias under
  ``params``), so the trainer loads it itself in that case; otherwise MaxText's own path runs.
  """
  path = str(getattr(student_config, "load_parameters_path", "") or "")
  if not path or not stored_extras(path):
    return ""
  return path


def load_student_weights(model: nnx.Module, student_config, checkpoint_path: str) -> None:
  """Loads the student's parameters (MaxText's params-only loader) and then its non-parameter variables."""
  from maxtext.common import checkpointing  # pylint: disable=import-outside-toplevel

  params = checkpointing.load_params_from_path(
      checkpoint_path,
      nnx.state(model, nnx.Param),
      student_config.checkpoint_storage_concurrent_gb,
      use_ocdbt=student_config.checkpoint_storage_use_ocdbt,
      use_zarr3=student_config.checkpoint_storage_use_zarr3,
  )
  nnx.update(model, params)
  restore_extras(model, checkpoint_path)
  check_materialized(model, "student", checkpoint_path)
