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

"""Routed batches: one MaxText pipeline per teacher, stacked into each global batch as static row blocks.

Teacher ``i``'s pipeline (:mod:`configuration.route_checks`) loads ``r_i`` rows per device and micro-batch, so its
loader batch has ``N * r_i * k`` rows over ``N`` device groups and ``k`` gradient-accumulation micro-batches. The
global batch is laid out as ``[N, P, k]`` with ``P = sum_i r_i``: device group ``n`` holds, for every micro-batch,
``r_0`` rows of teacher 0, then ``r_1`` of teacher 1, and so on. The step's strided micro-batch split
(:func:`step._split_micro_batches`) then gives every micro-batch the same blocks on every device, and
:class:`heads.RowBlocks` takes a teacher's rows with a reshape and a slice that stay on each device. Packing happens
inside each teacher's pipeline, so a packed row never mixes teachers.

Each pipeline is deterministic (MaxText's HF pipeline, seeded), so a resumed run draws and drops the loader batches
of the steps already trained on from every stream (:func:`data_resume.continue_data`), as the dataset source does.
A stream that runs out ends the run as MaxText's own loader does; proportional rows make them run out together.
"""

import functools

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.training import data_resume
from maxtext_distill_plugin.training.sources import base


def compose(batches: tuple[dict, ...], rows: tuple[int, ...], accumulation_steps: int) -> dict:
  """The global batch of the per-teacher loader ``batches`` (teachers with rows only, ``rows`` each per device)."""
  k = accumulation_steps

  def stack(*arrays):
    groups = arrays[0].shape[0] // (rows[0] * k)
    blocks = [x.reshape((groups, r, k) + x.shape[1:]) for x, r in zip(arrays, rows)]
    joined = jnp.concatenate(blocks, axis=1)
    return joined.reshape((groups * sum(rows) * k,) + joined.shape[3:])

  keys = batches[0].keys()
  return {key: stack(*(batch[key] for batch in batches)) for key in keys}


class RoutedSource(base.Dispatched):
  """A :class:`base.TrainingSource` over one MaxText ``DataLoader`` per teacher with rows."""

  def __init__(self, streams, mesh, data_sharding, accumulation_steps: int):
    """``streams``: :class:`route_checks.RouteStream` in ``teachers:`` order; ``data_sharding``: the student's."""
    from maxtext.common import data_loader  # pylint: disable=import-outside-toplevel
    from maxtext.input_pipeline import input_pipeline_interface  # pylint: disable=import-outside-toplevel

    self._streams = tuple(s for s in streams if s.rows)
    self._loaders = []
    for stream in self._streams:
      iterator, _ = input_pipeline_interface.create_data_iterator(stream.config, mesh)
      self._loaders.append(data_loader.DataLoader(stream.config, mesh, iterator, None))
    rows = tuple(s.rows for s in self._streams)
    self._compose = jax.jit(
        functools.partial(compose, rows=rows, accumulation_steps=accumulation_steps), out_shardings=data_sharding
    )
    self._started = False

  def skip_to(self, step: int) -> None:
    if self._started:
      raise ValueError("a routed source is positioned once, before its first batch: its iterators cannot go back")
    self._started = True
    for stream, loader in zip(self._streams, self._loaders):
      data_resume.continue_data(stream.config, loader, step)

  def next(self, state, teacher_state) -> tuple[dict, dict]:
    del state, teacher_state  # the data does not depend on the models
    self._started = True
    return self._compose(tuple(loader.load_next_batch() for loader in self._loaders)), {}
