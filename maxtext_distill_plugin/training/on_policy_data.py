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

"""Prompts out of a MaxText batch, and a MaxText batch out of sampled sequences.

MaxText's completion-only SFT pipeline shifts the labels one position left and zeroes
``targets_segmentation`` wherever the label is a prompt token, padding or BOS. So the first scored
position ``f`` of a row predicts its first completion token, and the prompt is ``inputs[:f + 1]``: the tokens
before the first completion token. A row without a scored label (its completion was cut off) keeps all its
valid tokens as the prompt; a row without any valid token (a padding row) has no prompt.

The built batch has MaxText's keys and shapes (``inputs``, ``targets``, their ``_position`` and
``_segmentation``) so the compiled train step scores it unchanged; ``targets_segmentation`` is nonzero exactly
where the label is a generated token, so every loss path scores the sampled tokens and nothing else.

All functions are pure and jit-able; shapes are static.
"""

from typing import NamedTuple

import jax.numpy as jnp


class Prompts(NamedTuple):
  """Right-padded prompts of one batch.

  Attributes:
    tokens_BxP: int32 prompt tokens, ``pad_id`` past each row's length.
    length_B: int32 prompt lengths in ``[0, P]``; 0 for a row without valid tokens.
    truncated_B: bool, True where the prompt was longer than ``P`` and lost its first tokens.
  """

  tokens_BxP: jnp.ndarray
  length_B: jnp.ndarray
  truncated_B: jnp.ndarray


def prompts_from_batch(batch: dict, prompt_len: int, pad_id: int) -> Prompts:
  """The prompt of every row of a non-packed MaxText batch, in a fixed bucket of ``prompt_len`` positions.

  Args:
    batch: ``inputs``, ``inputs_segmentation`` and ``targets_segmentation``, each ``[B, S]``.
    prompt_len: ``P``, the prompt bucket (``max_target_length - distill_sample_max_new_tokens``).
    pad_id: filler past a prompt's end.

  Returns:
    :class:`Prompts`. A prompt longer than ``P`` keeps its last ``P`` tokens, the ones the completion follows.
  """
  inputs = jnp.asarray(batch["inputs"], jnp.int32)
  scored_BxS = jnp.asarray(batch["targets_segmentation"]) != 0
  valid_B = jnp.sum(jnp.asarray(batch["inputs_segmentation"]) != 0, axis=1).astype(jnp.int32)
  first_scored_B = jnp.argmax(scored_BxS, axis=1).astype(jnp.int32)
  full_B = jnp.where(jnp.any(scored_BxS, axis=1), first_scored_B + 1, valid_B)
  length_B = jnp.minimum(full_B, prompt_len)
  start_B = full_B - length_B
  offsets_P = jnp.arange(prompt_len, dtype=jnp.int32)
  index_BxP = jnp.clip(start_B[:, None] + offsets_P[None, :], 0, inputs.shape[1] - 1)
  tokens_BxP = jnp.take_along_axis(inputs, index_BxP, axis=1)
  tokens_BxP = jnp.where(offsets_P[None, :] < length_B[:, None], tokens_BxP, pad_id)
  return Prompts(tokens_BxP.astype(jnp.int32), length_B, full_B > prompt_len)


def batch_from_samples(
    tokens_BxT: jnp.ndarray,
    prompt_mask_BxT: jnp.ndarray,
    completion_mask_BxT: jnp.ndarray,
    row_has_prompt_B: jnp.ndarray,
    *,
    length: int,
    pad_id: int,
) -> dict:
  """A MaxText training batch ``[B, length]`` of the sampled sequences, scored on the generated tokens only.

  Each row's prompt and completion tokens (where the masks are set) are moved to the front in order, so the
  layout the sampler used (completion right after the prompt, or after the prompt bucket) does not matter:

    inputs[b, i]               = i-th kept token of row b, ``pad_id`` past them
    targets[b, i]              = inputs[b, i + 1]            (``pad_id`` at the last position)
    inputs_segmentation[b, i]  = 1 where a kept token sits, else 0
    targets_segmentation[b, i] = 1 where inputs[b, i + 1] is a generated token, else 0
    *_position[b, i]           = i

  Rows with ``row_has_prompt_B`` False are all padding (nothing is scored on them).

  Args:
    tokens_BxT: sampled sequences (``T`` may differ from ``length``; at most ``length`` tokens are kept per row).
    prompt_mask_BxT: True on prompt tokens.
    completion_mask_BxT: True on generated tokens (EOS included when hit).
    row_has_prompt_B: rows that came from a real prompt.
    length: ``S``, the training sequence length (``max_target_length``).
    pad_id: filler.

  Returns:
    dict of int32 ``[B, S]`` arrays: inputs, inputs_position, inputs_segmentation, targets, targets_position,
    targets_segmentation.
  """
  keep_BxT = jnp.asarray(row_has_prompt_B, bool)[:, None]
  completion_BxT = jnp.asarray(completion_mask_BxT, bool) & keep_BxT
  valid_BxT = (jnp.asarray(prompt_mask_BxT, bool) & keep_BxT) | completion_BxT
  order_BxT = jnp.argsort(jnp.where(valid_BxT, 0, 1), axis=1, stable=True)  # kept tokens first, in their order

  def front(x):
    x = jnp.take_along_axis(x, order_BxT, axis=1)
    width = x.shape[1]
    if width >= length:
      return x[:, :length]
    return jnp.pad(x, ((0, 0), (0, length - width)))

  valid_BxS = front(valid_BxT)
  completion_BxS = front(completion_BxT) & valid_BxS
  inputs_BxS = jnp.where(valid_BxS, front(jnp.asarray(tokens_BxT, jnp.int32)), pad_id)
  pad_col = jnp.full((inputs_BxS.shape[0], 1), pad_id, jnp.int32)
  targets_BxS = jnp.concatenate([inputs_BxS[:, 1:], pad_col], axis=1)
  scored_BxS = jnp.concatenate([completion_BxS[:, 1:], jnp.zeros_like(completion_BxS[:, :1])], axis=1)
  positions_BxS = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), inputs_BxS.shape)
  return {
      "inputs": inputs_BxS.astype(jnp.int32),
      "inputs_position": positions_BxS,
      "inputs_segmentation": valid_BxS.astype(jnp.int32),
      "targets": targets_BxS.astype(jnp.int32),
      "targets_position": positions_BxS,
      "targets_segmentation": scored_BxS.astype(jnp.int32),
  }
