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

"""The sampler's prefill length on a TPU with splash attention, on MaxText's own config (no libtpu needed).

The shipped on-policy shape (max_target_length 2048, 16 new tokens) has a 2032-position prompt bucket, which MaxText's
splash kernel refuses (``q_block_size=512 should divide q_seq_len=2032``); the prefill must run over 2048.
"""

import pytest

from maxtext_distill_plugin.configuration import on_policy_checks
from maxtext_distill_plugin.model import prefill_length
from maxtext_distill_plugin.model import sampling
from tests.conftest import maxtext_base_yml


@pytest.fixture(scope="module")
def flash():
  """MaxText's own config (its key names and defaults) with attention=flash."""
  from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel

  return pyconfig.initialize([
      "prefill_length_test",
      maxtext_base_yml(),
      "run_name=prefill_length_test",
      "skip_jax_distributed_system=True",
      "enable_checkpointing=False",
      "max_target_length=2048",
      "attention=flash",
  ])


def _with(config, **keys):
  return sampling._ConfigView(config, keys)  # pylint: disable=protected-access


def test_the_shipped_bucket_is_padded_to_what_every_splash_block_divides(flash):
  settings = type("Settings", (), {"distill_sample_max_new_tokens": 16})()
  bucket = on_policy_checks.prompt_bucket(flash, settings)
  assert bucket == 2032  # the bucket itself is unchanged: which prompt tokens are kept does not depend on the kernel
  assert prefill_length.splash_blocks(flash) == (512,)
  assert prefill_length.prefill_length(flash, bucket, "tpu") == 2048
  assert not prefill_length.divides_all(2032, (512,)) and prefill_length.divides_all(2048, (512,))


@pytest.mark.parametrize(
    "prompt_len, want",
    [(1536, 1536), (1537, 2048), (300, 300), (513, 1024), (1, 1)],  # a block longer than the sequence shrinks to it
)
def test_lengths_with_the_default_blocks(flash, prompt_len, want):
  assert prefill_length.prefill_length(flash, prompt_len, "tpu") == want


def test_mixed_blocks_take_the_least_length_they_all_divide(flash):
  config = _with(flash, sa_block_q=256, sa_block_kv=1024, sa_block_q_dkv=256, sa_block_kv_dkv=256)
  assert prefill_length.splash_blocks(config) == (256, 512, 1024)
  # 700: the 1024 block shrinks to the length, so 768 would need 512 | 768 (no); 1024 is the least
  assert prefill_length.prefill_length(config, 700, "tpu") == 1024
  assert prefill_length.prefill_length(config, 2032, "tpu") == 2048
  assert prefill_length.prefill_length(config, 400, "tpu") == 512


def test_no_padding_where_splash_does_not_run(flash):
  assert prefill_length.prefill_length(flash, 2032, "cpu") == 2032
  assert prefill_length.prefill_length(flash, 2032, "gpu") == 2032
  dot = _with(flash, attention="dot_product")
  assert prefill_length.prefill_length(dot, 2032, "tpu") == 2032
  auto = _with(flash, attention="autoselected")
  assert prefill_length.prefill_length(auto, 2032, "tpu") == 2048
  assert prefill_length.prefill_length(auto, 100, "tpu") == 100  # below 128 positions autoselected is dot-product
