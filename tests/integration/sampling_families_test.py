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

"""The KV-cache sampler against the recompute sampler, greedy, on tiny randomly initialised students of the families
whose output head differs: tied embeddings (gemma, gemma3, qwen3), tied with a final soft cap (gemma2), untied
(llama3.1, mistral). The KV-cache path projects the prefill's last prompt position only, through the lean head
(:func:`lean_forward.forward_hidden`); the recompute path takes MaxText's own ``[B, S, V]`` logits of the train-mode
model every step. Same tokens, row for row. Behind ``make test-families`` (about 40 s a family on 2 cores).
"""

from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import numpy as np
import pytest

from tests.conftest import tiny_configs
from tests.integration import model_family_test as family

_FAMILIES = ("llama3.1", "mistral", "gemma", "gemma2", "gemma3", "qwen3")
_B, _P, _N = 3, 8, 8
_LENGTHS = np.array([8, 3, 5], np.int32)


@pytest.mark.families
@pytest.mark.parametrize("name", _FAMILIES)
def test_kv_cache_sampling_equals_recompute(tmp_path, teacher_checkpoint, name):
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.model import sampling  # pylint: disable=import-outside-toplevel

  keys = {**family.TINY, **family.FAMILIES[name]}
  keys.pop("distill_layer_indices", None)
  configs = tiny_configs(tmp_path, teacher_checkpoint, *(f"student_overrides.{k}={v}" for k, v in keys.items()))
  cfg = configs.student
  assert (cfg.logits_via_embedding, bool(cfg.final_logits_soft_cap)) == {
      "llama3.1": (False, False), "mistral": (False, False), "gemma": (True, False),
      "gemma2": (True, True), "gemma3": (True, False), "qwen3": (True, False),
  }[name]  # fmt: skip
  mesh = maxtext_utils.get_mesh_from_config(cfg)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(cfg.logical_axis_rules):
    graphdef, state = nnx.split(model_creation_utils.get_nnx_create_model_fn(cfg, mesh=mesh)())
  prompt = np.random.default_rng(0).integers(1, cfg.vocab_size, (_B, _P)).astype(np.int32)
  prompt[np.arange(_P)[None, :] >= _LENGTHS[:, None]] = 0
  options = sampling.SampleOptions(max_new_tokens=_N, temperature=0.0, eos_id=-1, pad_id=0)

  def sample(decode):
    sampler = sampling.make_sampler(graphdef, cfg, options, _P, _B, mesh=mesh, decode=decode)
    return np.asarray(sampler(state, prompt, _LENGTHS, jax.random.key(0)).tokens_BxS)

  cached, recomputed = sample("kv_cache"), sample("recompute")
  np.testing.assert_array_equal(cached, recomputed)
  assert (cached[:, _P:] != 0).any()  # something was generated
