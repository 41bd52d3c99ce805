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

"""BENCHMARK-ONLY shim: runs upstream MaxText 0.2.5's own distillation step with the released Tunix.

This module is NOT part of the product. It is never imported by
``maxtext_distill_plugin``, it ships in no wheel, and nothing in it should be
reused outside ``tools/bench_distill.py``. It exists so the benchmark can put
upstream's trainer next to ours on the same YAML.

What upstream needs to get as far as its compiled train step with
``google-tunix==0.1.7`` from PyPI:

* ``MaxTextCheckpointManager`` reads ``self._checkpointer``, an attribute the
  released Tunix ``CheckpointManager`` never sets (upstream was built against an
  unreleased Tunix), so the trainer dies at start with ``AttributeError`` even
  with checkpointing off. :func:`patch_released_tunix` gives the class a
  ``_checkpointer = None`` default, which every upstream method already treats
  as "no checkpointing".
* Tunix's ``PeftTrainer.train`` loop, as upstream drives it
  (``is_managed_externally = True``), never stops at ``steps``. The benchmark
  only needs the step, so :func:`serve_upstream_step` replaces ``train`` on
  upstream's trainer class with a hand-over: it builds the jitted train step
  exactly as Tunix's loop does (``jit_train_and_eval_step``), prepares one
  batch exactly as the loop does (``_prepare_inputs`` and
  ``sharding_utils.shard_input``), and passes both to the caller's callback.

Everything before the hand-over (config parsing, teacher and student loading,
strategy, optimizer, trainer construction, data iterator) is upstream's own
``main``, unchanged.
"""

import dataclasses
import importlib
from typing import Any, Callable

from absl import logging

UPSTREAM_MODULE = "maxtext.trainers.post_train.distillation.train_distill"


@dataclasses.dataclass
class UpstreamStep:
  """Upstream's compiled train step, ready to time."""

  step_fn: Callable[[Any], Any]  # Tunix's jitted step, bound to the trainer's model bundle and optimizer
  example: Any  # one prepared, sharded batch
  lower: Callable[[], Any]  # lowers the same nnx.jit the trainer calls, for memory_analysis()

  def run(self):
    """One training step; returns its outputs (loss, aux[, grad_norm])."""
    return self.step_fn(self.example)


def import_upstream_module():
  """MaxText's own ``train_distill`` module: importing the name gives it (the plugin serves only ``python -m``)."""
  module = importlib.import_module(UPSTREAM_MODULE)
  if "maxtext_distill_plugin" in str(getattr(module, "__file__", "")):
    raise RuntimeError(f"{UPSTREAM_MODULE} resolved to the plugin ({module.__file__}), not to MaxText's own module.")
  return module


def patch_released_tunix() -> None:
  """Gives upstream's checkpoint manager the ``_checkpointer`` attribute the released Tunix lacks."""
  from maxtext.trainers.post_train.distillation import distillation_utils  # pylint: disable=import-outside-toplevel

  manager = distillation_utils.MaxTextCheckpointManager
  if not hasattr(manager, "_checkpointer"):
    manager._checkpointer = None  # pylint: disable=protected-access
    logging.info("upstream_compat: MaxTextCheckpointManager._checkpointer = None (released Tunix has none)")


def _hand_over(on_step: Callable[[UpstreamStep], None]):
  """A replacement for the trainer's ``train`` that gives the compiled step to ``on_step`` and returns."""

  def train(trainer, train_ds, eval_ds=None, skip_jit=False, *, cache_nnx_graph=True):
    del eval_ds
    from tunix.sft import sharding_utils  # pylint: disable=import-outside-toplevel

    step_fn, _ = trainer.jit_train_and_eval_step(skip_jit, cache_nnx_graph)
    example = trainer._prepare_inputs(next(iter(train_ds)))  # pylint: disable=protected-access
    example = sharding_utils.shard_input(example, trainer.config.data_sharding_axis)
    # With cache_nnx_graph, Tunix wraps its nnx.jit in a cached partial that keeps the original as __wrapped__.
    jitted = getattr(step_fn.func, "__wrapped__", step_fn.func)

    def lower():
      return jitted.lower(trainer.model, trainer.optimizer, example)

    on_step(UpstreamStep(step_fn=step_fn, example=example, lower=lower))

  return train


def serve_upstream_step(argv: list[str], on_step: Callable[[UpstreamStep], None]) -> None:
  """Runs upstream's ``main(argv)`` up to its training loop and calls ``on_step`` with the compiled step.

  ``argv`` is ``[prog, config.yml, key=value, ...]`` as for the documented command.
  Upstream's teardown (final save, ``trainer.close()``) runs after ``on_step`` returns.
  """
  module = import_upstream_module()
  patch_released_tunix()
  module.MaxTextDistillationTrainer.train = _hand_over(on_step)
  module.main(argv)
