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

"""Prompts from a completion-only SFT batch, and the training batch of sampled sequences, against loops in NumPy."""

import jax
import numpy as np

from maxtext_distill_plugin.training import on_policy_data

PAD = 0


def _sft_batch(rows):
  """A batch as MaxText's completion-only SFT pipeline makes it: ``rows`` of (prompt ids, completion ids), length 8.

  Targets are the inputs shifted left; the label mask is 1 only where the label is a completion token.
  """
  length = 8
  inputs = np.zeros((len(rows), length), np.int32)
  targets_segmentation = np.zeros_like(inputs)
  for b, (prompt, completion) in enumerate(rows):
    ids = (list(prompt) + list(completion))[:length]
    is_completion = ([0] * len(prompt) + [1] * len(completion))[:length]
    inputs[b, : len(ids)] = ids
    for i in range(len(ids) - 1):
      targets_segmentation[b, i] = is_completion[i + 1]
  targets = np.concatenate([inputs[:, 1:], np.zeros((len(rows), 1), np.int32)], axis=1)
  return {
      "inputs": inputs,
      "inputs_segmentation": (inputs != PAD).astype(np.int32),
      "inputs_position": np.tile(np.arange(length, dtype=np.int32), (len(rows), 1)),
      "targets": targets,
      "targets_segmentation": targets_segmentation,
      "targets_position": np.tile(np.arange(length, dtype=np.int32), (len(rows), 1)),
  }


def test_prompt_is_every_token_before_the_first_completion_token():
  rows = [
      ([2, 10, 11, 12], [20, 21, 3]),  # fits the bucket exactly
      ([2, 5, 6, 7, 8, 9], [30]),  # too long: keeps its last 4 tokens
      ([2, 9], [33, 34, 35, 36, 37, 38, 39]),  # short prompt, long completion
      ([2, 4, 4, 4, 4, 4, 4, 4], [50]),  # the completion was cut off: the whole row is the prompt
      ([], []),  # a padding row
  ]
  prompts = jax.jit(on_policy_data.prompts_from_batch, static_argnums=(1, 2))(_sft_batch(rows), 4, PAD)
  want_tokens = [[2, 10, 11, 12], [6, 7, 8, 9], [2, 9, PAD, PAD], [4, 4, 4, 4], [PAD] * 4]
  np.testing.assert_array_equal(prompts.tokens_BxP, want_tokens)
  np.testing.assert_array_equal(prompts.length_B, [4, 4, 2, 4, 0])
  np.testing.assert_array_equal(prompts.truncated_B, [False, True, False, True, False])


def _reference_batch(tokens, prompt_mask, completion_mask, has_prompt, length):
  """Row by row: keep the masked tokens in order; a label is scored when it is a generated token."""
  rows = tokens.shape[0]
  out = {k: np.zeros((rows, length), np.int64) for k in ("inputs", "inputs_segmentation", "targets")}
  out["targets_segmentation"] = np.zeros((rows, length), np.int64)
  for b in range(rows):
    triples = zip(tokens[b], prompt_mask[b], completion_mask[b])
    kept = [(int(t), bool(c)) for t, p, c in triples if has_prompt[b] and (p or c)]
    kept = kept[:length]
    for i, (token, _) in enumerate(kept):
      out["inputs"][b, i] = token
      out["inputs_segmentation"][b, i] = 1
      if i > 0:
        out["targets"][b, i - 1] = token
        out["targets_segmentation"][b, i - 1] = int(kept[i][1])
  return out


def test_training_batch_scores_exactly_the_generated_tokens():
  # The sampler's layout: a 4-position prompt bucket, then 4 generated positions (EOS counted, padding after).
  tokens = np.array(
      [
          [2, 10, 11, 12, 40, 41, 3, PAD],  # full prompt, EOS after two tokens
          [6, 7, PAD, PAD, 50, 51, 52, 53],  # short prompt: a gap before the completion
          [9, PAD, PAD, PAD, 60, 3, PAD, PAD],
          [PAD, PAD, PAD, PAD, 70, 71, 72, 73],  # a padding row: nothing is kept
      ],
      np.int32,
  )
  prompt_mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0], [0] * 8], bool)
  completion_mask = np.array(
      [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]], bool
  )
  has_prompt = np.array([True, True, True, False])
  build = jax.jit(on_policy_data.batch_from_samples, static_argnames=("length", "pad_id"))
  for length in (8, 10, 6):  # the training length equal to, longer and shorter than the sampled one
    got = jax.device_get(build(tokens, prompt_mask, completion_mask, has_prompt, length=length, pad_id=PAD))
    want = _reference_batch(tokens, prompt_mask, completion_mask, has_prompt, length)
    for key, value in want.items():
      np.testing.assert_array_equal(got[key], value, err_msg=f"{key} length={length}")
    for key in ("inputs_position", "targets_position"):
      np.testing.assert_array_equal(got[key], np.tile(np.arange(length), (4, 1)))
    assert all(v.dtype == np.int32 and v.shape == (4, length) for v in got.values())
  got = jax.device_get(build(tokens, prompt_mask, completion_mask, has_prompt, length=8, pad_id=PAD))
  # Spelled out for row 1: prompt [6, 7], then the four generated tokens; labels 50..53 are scored.
  np.testing.assert_array_equal(got["inputs"][1], [6, 7, 50, 51, 52, 53, PAD, PAD])
  np.testing.assert_array_equal(got["targets_segmentation"][1], [0, 1, 1, 1, 1, 0, 0, 0])
  # Scored labels = generated tokens of the rows with a prompt.
  assert got["targets_segmentation"].sum() == (completion_mask & has_prompt[:, None]).sum()


def test_prompts_of_a_batch_round_trip_through_the_training_batch():
  """A batch's prompts followed by its own completions rebuild the batch's scored labels."""
  rows = [([2, 10, 11, 12], [20, 21, 3]), ([2, 9], [33, 34, 35, 3])]
  batch = _sft_batch(rows)
  prompts = on_policy_data.prompts_from_batch(batch, 4, PAD)
  completions = np.array([[20, 21, 3, PAD], [33, 34, 35, 3]], np.int32)
  tokens = np.concatenate([np.asarray(prompts.tokens_BxP), completions], axis=1)
  prompt_mask = np.arange(4)[None, :] < np.asarray(prompts.length_B)[:, None]
  prompt_mask = np.concatenate([prompt_mask, np.zeros((2, 4), bool)], axis=1)
  completion_mask = np.concatenate([np.zeros((2, 4), bool), completions != PAD], axis=1)
  got = on_policy_data.batch_from_samples(
      tokens, prompt_mask, completion_mask, np.array([True, True]), length=8, pad_id=PAD
  )
  for key in ("inputs", "inputs_segmentation", "targets", "targets_segmentation"):
    np.testing.assert_array_equal(got[key], batch[key], err_msg=key)
