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

"""Tiling helpers shared by the memory-lean losses (:mod:`tile_vjp` and the kernels plugged into it).

The losses see the logits ``cap(hidden @ unembed)`` only as ``[B, seq_chunk, vocab_chunk]``
tiles: sequence tiles are scanned in an outer loop, vocabulary tiles in an inner
one, and per-token softmax statistics are folded in with an online log-sum-exp.
"""

import dataclasses

import jax.numpy as jnp

from maxtext_distill_plugin.loss import losses

DEFAULT_SEQ_CHUNK = 128
# Finite stand-in for -inf on padded vocabulary columns: exp() underflows to 0 and
# differences of two padded logits stay 0 there, where -inf would give inf - inf = NaN.
PADDED_LOGIT = -1e30


@dataclasses.dataclass(frozen=True)
class Tiling:
  """Static tile sizes and the student's soft cap (hashable: part of a ``nondiff_argnums`` argument)."""

  seq_chunk: int
  vocab_chunk: int
  vocab_size: int
  student_softcap: float | None


def make_tiling(
    seq: int,
    vocab: int,
    seq_chunk: int,
    vocab_chunk: int | None,
    student_softcap: float | None,
) -> Tiling:
  """Validated :class:`Tiling`; chunks larger than the array shrink to it, ``vocab_chunk=None`` takes all of V."""
  if seq_chunk < 1 or (vocab_chunk is not None and vocab_chunk < 1):
    raise ValueError(f"seq_chunk={seq_chunk} and vocab_chunk={vocab_chunk} must be positive")
  return Tiling(
      seq_chunk=min(seq_chunk, seq),
      vocab_chunk=min(vocab_chunk or vocab, vocab),
      vocab_size=vocab,
      student_softcap=float(student_softcap) if student_softcap else None,
  )


def seq_tiles(x_BxSxK: jnp.ndarray, chunk: int) -> jnp.ndarray:
  """``[B, S, ...] -> [ceil(S / chunk), B, chunk, ...]``, zero-padded along S."""
  batch, seq = x_BxSxK.shape[:2]
  num = -(-seq // chunk)
  padded = jnp.pad(x_BxSxK, [(0, 0), (0, num * chunk - seq)] + [(0, 0)] * (x_BxSxK.ndim - 2))
  return jnp.swapaxes(padded.reshape((batch, num, chunk) + x_BxSxK.shape[2:]), 0, 1)


def from_seq_tiles(x_NxBxCxK: jnp.ndarray, seq: int) -> jnp.ndarray:
  """Inverse of :func:`seq_tiles`: ``[N, B, chunk, ...] -> [B, S, ...]``."""
  x = jnp.swapaxes(x_NxBxCxK, 0, 1)
  return x.reshape((x.shape[0], -1) + x.shape[3:])[:, :seq]


def vocab_tiles(unembed_DxV: jnp.ndarray, chunk: int) -> jnp.ndarray:
  """``[D, V] -> [ceil(V / chunk), D, chunk]``, zero columns past V."""
  dim, vocab = unembed_DxV.shape
  num = -(-vocab // chunk)
  padded = jnp.pad(unembed_DxV, [(0, 0), (0, num * chunk - vocab)])
  return jnp.swapaxes(padded.reshape(dim, num, chunk), 0, 1)


def from_vocab_tiles(x_NxDxK: jnp.ndarray, vocab: int) -> jnp.ndarray:
  """Inverse of :func:`vocab_tiles`: ``[N, D, chunk] -> [D, V]``."""
  num_tiles, dim, chunk = x_NxDxK.shape
  return jnp.swapaxes(x_NxDxK, 0, 1).reshape(dim, num_tiles * chunk)[:, :vocab]


def tile_logits(hidden_BxCxD, unembed_DxK, column_offset, softcap: float | None):
  """Soft-capped float32 logits of one tile ``[B, C, K]`` and the tile's vocabulary ids ``[K]``."""
  logits = jnp.einsum("bcd,dk->bck", hidden_BxCxD, unembed_DxK, preferred_element_type=jnp.float32)
  if softcap:
    logits = softcap * jnp.tanh(logits / softcap)
  return logits, column_offset + jnp.arange(unembed_DxK.shape[-1])


def online_update(state, logits_BxCxK, values_BxCxK=None):
  """Folds one tile into a running (max, sum exp, sum exp * value) per token.

  ``values_BxCxK`` may be a tuple of arrays; ``state[2]`` is then a tuple of as many sums, all
  weighted by the same ``exp`` (computed once).
  """
  running_max, sum_exp, weighted = state
  new_max = jnp.maximum(running_max, jnp.max(logits_BxCxK, axis=-1))
  rescale = jnp.exp(running_max - new_max)  # exp(-inf) = 0 on the first tile
  probs = jnp.exp(logits_BxCxK - new_max[..., None])
  sum_exp = sum_exp * rescale + jnp.sum(probs, axis=-1)
  if isinstance(values_BxCxK, tuple):
    weighted = tuple(w * rescale + jnp.sum(probs * v, axis=-1) for w, v in zip(weighted, values_BxCxK))
  elif values_BxCxK is not None:
    weighted = weighted * rescale + jnp.sum(probs * values_BxCxK, axis=-1)
  return new_max, sum_exp, weighted


def empty_online_state(shape) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """The state :func:`online_update` starts from: max ``-inf``, sums 0, each ``shape`` float32."""
  return jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)


def online_lse(state) -> jnp.ndarray:
  """``log sum exp`` of everything folded into an :func:`online_update` state."""
  running_max, sum_exp, _ = state
  return running_max + jnp.log(sum_exp)


def running_argmax(index_BxC, old_max_BxC, new_max_BxC, logits_BxCxK, column_offset) -> jnp.ndarray:
  """The vocabulary id of the first maximum so far, ``[B, C]`` int32, after one more tile.

  ``old_max`` / ``new_max`` are the running maxima before and after the tile (:func:`online_update`).
  A tile takes over only where it raises the maximum strictly and tiles come in column order, so
  ties keep the lowest id, as ``jnp.argmax`` over the whole row does.
  """
  tile_argmax = column_offset + jnp.argmax(logits_BxCxK, axis=-1).astype(jnp.int32)
  return jnp.where(new_max_BxC > old_max_BxC, tile_argmax, index_BxC)


def running_top_k(top_BxCxk: jnp.ndarray, logits_BxCxK: jnp.ndarray) -> jnp.ndarray:
  """The k largest logits so far ``[B, C, k]`` (k = the carry's last axis; start from ``-inf``), after one more tile."""
  return losses.top_k_values(jnp.concatenate([top_BxCxk, logits_BxCxK], axis=-1), top_BxCxk.shape[-1])
