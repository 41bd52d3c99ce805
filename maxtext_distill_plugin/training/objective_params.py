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

"""Parameters the objective owns (``distill_feature_projection=linear``): built, stepped, saved and restored.

They are trained with the student but are not part of the MaxText model, so they are kept beside its train state
rather than inside it: MaxText's checkpoint (``<run>/checkpoints/<step>/items``) is what a MaxText-only consumer loads
(``load_parameters_path``, ``load_full_state_path``), and a leaf its model lacks would not belong there. An nnx
submodule on the student would put the projection into that tree (and into MaxText's optimizer state) unless every
save filtered it out; a separate pytree needs no filter. The tree ``{"params", "opt_state"}`` is

* stepped by the same jitted step as the student (:func:`step.make_train_step` with ``objective_tx``): one objective,
  one gradient, one global-norm clipping over both;
* optimised by MaxText's own optimizer factory on the student's config (same ``opt_type``, hyperparameters and
  learning-rate schedule), less the student's freezing mask, which names model paths only;
* saved by Orbax to ``<run>/objective_checkpoints/<step>`` right after each checkpoint MaxText writes, under the same
  step, and restored from the step MaxText resumes from, so a resumed run continues exactly.
"""

import os

from absl import logging
import jax
from jax.sharding import NamedSharding, PartitionSpec

from maxtext_distill_plugin.loss import feature_projection
from maxtext_distill_plugin.training import run_record

OBJECTIVE_DIR = "objective_checkpoints"


def directory(student_config) -> str:
  """Where the objective's checkpoints go: beside MaxText's ``checkpoints/`` in the run directory."""
  return os.path.join(run_record.run_dir(student_config), OBJECTIVE_DIR)


def optimizer(student_config, learning_rate_schedule):
  """MaxText's optimizer for the student's config, without its freezing mask (which names model paths only)."""
  from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel
  from maxtext.optimizers import optimizers  # pylint: disable=import-outside-toplevel

  pydantic_config = getattr(student_config, "_pydantic_config", student_config)
  unmasked = pyconfig.HyperParameters(pydantic_config.model_copy(update={"trainable_parameters_mask": []}))
  return optimizers.get_optimizer(unmasked, learning_rate_schedule)


def initial_params(configs) -> dict:
  """The projection of the aligned layers at its documented initialisation (:mod:`feature_projection`)."""
  student, teacher, settings = configs.student, configs.teacher, configs.settings
  indices = settings.distill_layer_indices
  layers = len(indices) if indices is not None else int(student.num_decoder_layers)
  return feature_projection.init_params(
      int(student.init_weights_seed), layers, int(student.emb_dim), int(teacher.emb_dim)
  )


class NoObjectiveParams:
  """The objective owns no parameters (``distill_feature_projection=none``): the student's steps as they are."""

  tx = None

  def train_step(self, fn, state_shardings):
    return jax.jit(fn, donate_argnums=(0,), out_shardings=(state_shardings, None))

  def eval_step(self, fn):
    return jax.jit(fn)

  def save(self, checkpoint_manager, step: int) -> None:
    del checkpoint_manager, step


class ObjectiveParams:
  """The objective's ``{"params", "opt_state"}`` between steps, and its checkpoints."""

  def __init__(self, tree: dict, tx, root: str, mesh):
    self.tx = tx
    self.root = root
    self._sharding = NamedSharding(mesh, PartitionSpec())  # replicated: small next to the models
    self.tree = jax.device_put(tree, self._sharding)

  def train_step(self, fn, state_shardings):
    """``train_step(state, teacher_state, batch) -> (state, metrics)`` over ``fn`` (the objective's variant of the
    step), carrying the objective's tree here: the batch sources call every step the same way."""
    jitted = jax.jit(fn, donate_argnums=(0, 1), out_shardings=(state_shardings, self._sharding, None))

    def train_step(state, teacher_state, batch):
      state, self.tree, metrics = jitted(state, self.tree, teacher_state, batch)
      return state, metrics

    return train_step

  def eval_step(self, fn):
    jitted = jax.jit(fn)
    return lambda state, teacher_state, batch: jitted(state, teacher_state, batch, self.tree["params"])

  def save(self, checkpoint_manager, step: int) -> None:
    """Writes the tree under ``step`` wherever the trainer asks MaxText to checkpoint ``step`` (MaxText may skip a
    step it already holds; the tree is then written once too), synchronously: it is small, and a resume must find it.
    Steps older than MaxText's oldest kept checkpoint are deleted."""
    from etils import epath  # pylint: disable=import-outside-toplevel
    from maxtext.common import checkpointing  # pylint: disable=import-outside-toplevel
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

    if checkpoint_manager is None:
      return
    path = epath.Path(self.root) / str(step)
    if not path.exists():
      ocp.PyTreeCheckpointer().save(path, _named_leaves(self.tree))
      logging.info("maxtext-distill: objective parameters saved to %s", path)
    kept = checkpointing.all_steps(checkpoint_manager)
    if jax.process_index() == 0 and kept:
      for old in epath.Path(self.root).iterdir():
        if old.name.isdigit() and int(old.name) < min(kept):
          old.rmtree()

  def restore(self, step: int) -> None:
    """Reads the tree MaxText's checkpoint ``step`` was saved with; refuses a resume without it."""
    from etils import epath  # pylint: disable=import-outside-toplevel
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

    path = epath.Path(self.root) / str(step)
    if not path.exists():
      raise ValueError(
          f"Resuming at checkpoint {step} with distill_feature_projection=linear, but {path} holds no objective"
          " parameters (the run was started without the projection, or they were deleted). Fix: resume with the"
          " settings the run was started with, or start a new run_name with load_parameters_path=<that"
          " checkpoint>/items, which initialises the projection afresh."
      )
    target = _named_leaves(self.tree)
    restored = ocp.PyTreeCheckpointer().restore(
        path, item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
    )
    treedef = jax.tree.structure(self.tree)
    self.tree = jax.tree.unflatten(treedef, [restored[name] for name in target])
    logging.info("maxtext-distill: objective parameters restored from %s", path)
    if jax.process_index() == 0:  # later steps belong to the run's abandoned future (MaxText resumed before them)
      for later in epath.Path(self.root).iterdir():
        if later.name.isdigit() and int(later.name) > step:
          later.rmtree()


def _named_leaves(tree: dict) -> dict:
  """``{path name: leaf}`` in leaf order: Orbax stores plain named arrays, whatever containers the optimizer uses."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path, simple=True, separator="."): leaf for path, leaf in flat}


def _refuse_dropping_a_projection(student_config, start_step: int) -> None:
  """A run trained with the projection and resumed without it would silently change its objective mid-run."""
  from etils import epath  # pylint: disable=import-outside-toplevel

  root = epath.Path(directory(student_config))
  if start_step > 0 and root.exists() and any(p.name.isdigit() for p in root.iterdir()):
    raise ValueError(
        f"This run was trained with distill_feature_projection=linear ({root} holds its projection), and resumes"
        " with distill_feature_projection=none. Fix: resume with distill_feature_projection=linear, or start a new"
        " run_name with load_parameters_path=<a checkpoint>/items to drop the projection."
    )


def start(configs, mesh, learning_rate_schedule, start_step: int):
  """The run's objective parameters: none, or the projection (restored when the run resumes at ``start_step``)."""
  if configs.settings.distill_feature_projection == "none":
    _refuse_dropping_a_projection(configs.student, start_step)
    return NoObjectiveParams()
  tx = optimizer(configs.student, learning_rate_schedule)
  params = initial_params(configs)
  objective = ObjectiveParams({"params": params, "opt_state": tx.init(params)}, tx, directory(configs.student), mesh)
  if start_step > 0:
    objective.restore(start_step - 1)  # MaxText's checkpoint of step s holds the state after s + 1 updates
  else:
    kernel = params[feature_projection.PARAMS_KEY]["kernel"]
    logging.info(
        "maxtext-distill: feature projection %s initialised (%s)",
        kernel.shape,
        "identity" if kernel.shape[1] == kernel.shape[2] else "semi-orthogonal",
    )
  return objective
