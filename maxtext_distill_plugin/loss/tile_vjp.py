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

"""The one custom-VJP tile skeleton of the memory-lean losses: per-token terms of ``z = cap(h @ W)`` without ``z``.

Every lean loss (one online teacher, a mixture of online teachers: :mod:`online_tiles`; a cached top-k teacher:
:mod:`chunked_sparse`) sees the student's logits only as ``[B, seq_chunk, vocab_chunk]`` tiles. This module owns what
they share:

* the outer scan over sequence tiles, forward and backward, and the tiling of every input: the student's hidden states
  and the per-token inputs (teacher hidden states, labels, cached ids) by sequence, the student's unembedding and the
  per-column inputs (teacher unembeddings) by vocabulary;
* the ``jax.custom_vjp``: the forward keeps only the inputs and each kernel's small per-token residuals (log-sum-exps),
  never a tile;
* the backward's chain rule: per tile, the kernel gives ``dL/dz`` (its per-tile math), and the skeleton applies the
  soft cap's derivative ``1 - (z / c)^2`` and accumulates ``dL/dh += dL/dz W^T`` and ``dL/dW = h^T dL/dz``.

A kernel (a hashable frozen dataclass, the VJP's static argument) plugs in its per-tile math through
:class:`TileKernel`. Gradients flow to the student's hidden states and unembedding only; every other input is a
constant. No ``[B, S, V]`` array exists in the forward or the backward.
"""

import functools
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import tiles

# ``(capped student logits [B, C, K], their column ids [K], the per-column inputs' tiles, the tile's first column)``
# -> ``dL/dz [B, C, K]`` before the soft cap's derivative.
TileCotangent = Callable[[jnp.ndarray, jnp.ndarray, Any, jnp.ndarray], jnp.ndarray]


class TileKernel(Protocol):
  """The per-tile math one lean loss plugs into :func:`tiled_terms` (a hashable frozen dataclass)."""

  tiling: tiles.Tiling

  def forward_row(self, scalars, student_tiles, column_tiles, hidden_BxCxD, row_inputs) -> tuple[Any, Any]:
    """``(per-token outputs, residuals)`` of one sequence tile, pytrees of ``[B, C, ...]`` arrays.

    ``student_tiles``: the student's unembedding ``[N, D, vocab_chunk]``; ``column_tiles``: the per-column inputs tiled
    alike; ``row_inputs``: the per-token inputs of this sequence tile. :func:`over_vocab` scans the vocabulary tiles.
    """

  def sweep(self, run: Callable[[Any], tuple[Any, Any]], scalars) -> tuple[Any, Any]:
    """The forward over all sequence tiles: ``run(kernel)`` scans them with ``kernel.forward_row``; a kernel may run
    a variant of itself under a traced condition of ``scalars`` (the outputs' structure must not change)."""

  def differentiable(self, cotangents) -> Any:
    """The cotangents of the outputs that carry a gradient (diagnostics and teacher terms dropped)."""

  def logit_cotangent(self, scalars, row_inputs, residuals, cotangents) -> TileCotangent:
    """The function giving ``dL/dz`` of each vocabulary tile of one sequence tile (its per-row work done once)."""


def over_vocab(body, init, student_tiles, column_tiles, vocab_chunk: int):
  """``jax.lax.scan`` of ``body(carry, (student tile, column tiles, first column))`` over the vocabulary tiles."""
  offsets = jnp.arange(student_tiles.shape[0]) * vocab_chunk
  return jax.lax.scan(body, init, (student_tiles, column_tiles, offsets))


def _tiled_inputs(tiling: tiles.Tiling, hidden, unembed, row_inputs, column_inputs):
  student_tiles = tiles.vocab_tiles(unembed, tiling.vocab_chunk)
  column_tiles = jax.tree.map(lambda w: tiles.vocab_tiles(w, tiling.vocab_chunk), column_inputs)
  rows = tuple(jax.tree.map(lambda x: tiles.seq_tiles(x, tiling.seq_chunk), x) for x in (hidden, row_inputs))
  return student_tiles, column_tiles, rows


def _terms_fwd(kernel: TileKernel, hidden, unembed, row_inputs, column_inputs, scalars):
  student_tiles, column_tiles, rows = _tiled_inputs(kernel.tiling, hidden, unembed, row_inputs, column_inputs)

  def run(row_kernel: TileKernel):
    step = functools.partial(row_kernel.forward_row, scalars, student_tiles, column_tiles)
    _, (outputs, residuals) = jax.lax.scan(lambda carry, row: (carry, step(*row)), None, rows)
    return outputs, residuals

  outputs, residuals = kernel.sweep(run, scalars)
  seq = hidden.shape[1]
  outputs_BxS = jax.tree.map(lambda x: tiles.from_seq_tiles(x, seq), outputs)
  return outputs_BxS, (hidden, unembed, row_inputs, column_inputs, scalars, residuals)


def _backward_row(kernel: TileKernel, scalars, student_tiles, column_tiles, row):
  """Gradients of one sequence tile: ``d hidden [B, C, D]`` and ``d unembed`` tiles ``[N, D, vocab_chunk]``."""
  hidden_BxCxD, row_inputs, residuals, cotangents = row
  softcap = kernel.tiling.student_softcap
  tile_cotangent = kernel.logit_cotangent(scalars, row_inputs, residuals, cotangents)

  def body(d_hidden, tile):
    unembed_DxK, columns_tile, offset = tile
    capped, columns = tiles.tile_logits(hidden_BxCxD, unembed_DxK, offset, softcap)
    d_logits = tile_cotangent(capped, columns, columns_tile, offset)
    if softcap:
      d_logits = d_logits * (1.0 - jnp.square(capped / softcap))
    d_hidden = d_hidden + jnp.einsum("bck,dk->bcd", d_logits, unembed_DxK, preferred_element_type=jnp.float32)
    d_unembed = jnp.einsum("bcd,bck->dk", hidden_BxCxD, d_logits, preferred_element_type=jnp.float32)
    return d_hidden, d_unembed

  init = jnp.zeros(hidden_BxCxD.shape, jnp.float32)
  return over_vocab(body, init, student_tiles, column_tiles, kernel.tiling.vocab_chunk)


def _terms_bwd(kernel: TileKernel, residuals, cotangents):
  hidden, unembed, row_inputs, column_inputs, scalars, row_residuals = residuals
  tiling = kernel.tiling
  cotangents = jax.tree.map(
      lambda c: tiles.seq_tiles(c.astype(jnp.float32), tiling.seq_chunk), kernel.differentiable(cotangents)
  )
  student_tiles, column_tiles, rows = _tiled_inputs(tiling, hidden, unembed, row_inputs, column_inputs)

  def body(d_unembed_tiles, row):
    d_hidden, d_tiles = _backward_row(kernel, scalars, student_tiles, column_tiles, row)
    return d_unembed_tiles + d_tiles, d_hidden

  init = jnp.zeros(student_tiles.shape, jnp.float32)
  d_unembed_tiles, d_hidden = jax.lax.scan(body, init, rows + (row_residuals, cotangents))
  d_unembed = tiles.from_vocab_tiles(d_unembed_tiles, tiling.vocab_size)
  d_hidden = tiles.from_seq_tiles(d_hidden, hidden.shape[1])
  return d_hidden.astype(hidden.dtype), d_unembed.astype(unembed.dtype), None, None, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def tiled_terms(kernel: TileKernel, hidden_BxSxD, unembed_DxV, row_inputs, column_inputs, scalars):
  """The kernel's per-token outputs (a pytree of ``[B, S, ...]`` arrays) of ``cap(hidden @ unembed)``, tile by tile.

  Args:
    kernel: the loss's per-tile math (static).
    hidden_BxSxD: the student's final hidden states; gradients flow here.
    unembed_DxV: the student's unembedding; gradients flow here.
    row_inputs: a pytree of ``[B, S, ...]`` constants tiled along the sequence with the hidden states.
    column_inputs: a pytree of ``[D', V]`` constants tiled along the vocabulary with the unembedding.
    scalars: a pytree of traced scalars the kernel reads (temperature, flags); no gradient.
  """
  outputs, _ = _terms_fwd(kernel, hidden_BxSxD, unembed_DxV, row_inputs, column_inputs, scalars)
  return outputs


tiled_terms.defvjp(_terms_fwd, _terms_bwd)
