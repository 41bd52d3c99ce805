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

"""How many positions the sampler's prefill runs over, so that MaxText's attention kernel accepts it.

On a TPU, MaxText 0.2.5 runs the prefill's attention with the splash kernel when ``attention`` is ``flash`` (or
``autoselected`` for 128 positions or more). Each of its blocks is ``min(block, length)`` and must divide the
sequence: a prompt bucket of ``max_target_length - distill_sample_max_new_tokens`` = 2048 - 16 = 2032 positions
fails with ``q_block_size=512 should divide q_seq_len=2032``. The sampler therefore right-pads the prompts to the
next length every block divides (2048 there) and marks the padding as no segment, exactly as it already marks the
padding of prompts shorter than the bucket: the prompt bucket, and so which prompt tokens are kept, is unchanged,
and the cost is the padding's share of one prefill (16 of 2048 positions in that case) and of the KV cache.
"""

import math

# The splash block sizes MaxText reads for training, evaluation and sliding-window layers. The backward's blocks are
# included too: MaxText builds one block-size record for the whole kernel, and a length they divide costs nothing more
# with the defaults (all 512).
_BLOCK_KEYS = tuple(
    f"{prefix}{name}"
    for prefix in ("sa_", "eval_sa_", "local_sa_", "eval_local_sa_")
    for name in (
        "block_q",
        "block_kv",
        "block_kv_compute",
        "block_q_dkv",
        "block_kv_dkv",
        "block_kv_dkv_compute",
        "block_q_dq",
        "block_kv_dq",
    )
)
_SPLASH_MIN_LENGTH = 128  # "autoselected" takes dot-product attention below this many positions


def uses_splash(config, platform: str, length: int) -> bool:
  """Whether MaxText's prefill attention over ``length`` positions runs the TPU splash kernel."""
  if platform != "tpu":
    return False
  kernel = str(getattr(config.attention, "value", config.attention))
  return kernel == "flash" or (kernel == "autoselected" and length >= _SPLASH_MIN_LENGTH)


def splash_blocks(config) -> tuple[int, ...]:
  """The distinct positive splash block sizes ``config`` sets (a None ``local_*`` key inherits the global one)."""
  sizes = {int(v) for v in (getattr(config, key, None) for key in _BLOCK_KEYS) if v is not None and int(v) > 0}
  return tuple(sorted(sizes))


def divides_all(length: int, blocks) -> bool:
  """Whether every kernel block ``min(block, length)`` divides ``length``."""
  return all(length % min(block, length) == 0 for block in blocks)


def prefill_length(config, prompt_len: int, platform: str) -> int:
  """The prefill's positions: ``prompt_len``, or where the splash kernel runs, the least length >= ``prompt_len``
  that all of its blocks divide (at most ``prompt_len`` rounded up to the blocks' least common multiple)."""
  prompt_len = int(prompt_len)
  if not uses_splash(config, platform, prompt_len):
    return prompt_len
  blocks = splash_blocks(config)
  if not blocks:
    return prompt_len
  step = math.lcm(*blocks)
  for length in range(prompt_len, prompt_len + step + 1):
    if divides_all(length, blocks):
      return length
  return -(-prompt_len // step) * step  # unreachable: a multiple of step lies in the range
