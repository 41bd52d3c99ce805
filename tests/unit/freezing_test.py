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

"""Parameter selection and weight-copy plans on plain path tables (no model)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.student import freezing
from maxtext_distill_plugin.student import weight_copy

PARAMS = {
    "decoder/decoder_norm/scale": ((8,), "float32"),
    "decoder/layers/mlp/wi_0/kernel": ((8, 2, 16), "float32"),
    "decoder/layers/mlp/wo/kernel": ((16, 2, 8), "float32"),
    "decoder/layers/pre_self_attention_layer_norm/scale": ((8, 2), "float32"),
    "decoder/layers/self_attention/query/kernel": ((8, 2, 2, 4), "float32"),
    "decoder/layers/self_attention/out/kernel": ((2, 2, 4, 8), "float32"),
    "token_embedder/embedding": ((32, 8), "float32"),
}


def test_templates_are_searched_like_upstreams_filter():
  templates = ["decoder/layers/self_attention/", "scale"]
  # Upstream: a parameter trains when any template is found by re.search in its "/"-joined path.
  expected = sorted(p for p in PARAMS if any(re.search(t, p) for t in templates))
  assert sorted(freezing.select(PARAMS, templates)) == expected
  assert len(expected) == 4


def test_resolved_mask_selects_exactly_those_arrays_as_variables_or_arrays():
  mask = freezing.resolve_mask(PARAMS, ["self_attention/", "kernel$"])
  chosen = {p for p in PARAMS if re.search("self_attention/", p) or re.search("kernel$", p)}
  for path in PARAMS:
    for seen_as in (path, path + "/value"):  # the optimizer's init sees Variables, its update sees arrays
      assert freezing.is_trainable(seen_as, mask) == (path in chosen)
      assert any(re.search(p, seen_as) for p in mask) == (path in chosen)  # MaxText's own test of the mask


def test_counts():
  mask = freezing.resolve_mask(PARAMS, ["mlp/"])
  trained = 8 * 2 * 16 + 16 * 2 * 8
  assert freezing.count(PARAMS, mask) == (trained, sum(int(np.prod(s)) for s, _ in PARAMS.values()), 2, 7)
  assert freezing.count(PARAMS, None)[0] == freezing.count(PARAMS, None)[1]


@pytest.mark.parametrize("templates", [["self_atention/"], ["mlp", "nothing_here"]])
def test_a_template_that_matches_nothing_is_refused(templates):
  with pytest.raises(errors.ConfigError, match="student_params_to_update") as info:
    freezing.resolve_mask(PARAMS, templates)
  assert info.value.value == templates[-1] and "Fix" in str(info.value)


def test_bad_templates_are_refused():
  for bad in ("mlp", ["mlp/(wi"]):
    with pytest.raises(errors.ConfigError, match="student_params_to_update"):
      freezing.compile_templates(bad)


def test_zero_frozen_keeps_trained_gradients_and_zeroes_the_rest():
  grads = {"decoder": {"mlp": {"kernel": jnp.ones((2, 3))}, "attn": {"kernel": jnp.full((2,), 2.0)}}}
  mask = ["^decoder/attn/kernel(?:/value)?$"]
  out = jax.jit(lambda g: freezing.zero_frozen(g, mask))(grads)
  np.testing.assert_array_equal(out["decoder"]["attn"]["kernel"], np.full((2,), 2.0))
  np.testing.assert_array_equal(out["decoder"]["mlp"]["kernel"], np.zeros((2, 3)))
  assert freezing.zero_frozen(grads, None) is grads


TEACHER = {**PARAMS, "decoder/layers/mlp/wi_0/kernel": ((8, 4, 16), "float32"), "decoder/extra/scale": ((8,), "float32")}


def test_copy_plan_same_path_and_templates():
  same = weight_copy.plan({"token_embedder/embedding": "token_embedder/embedding"}, TEACHER, PARAMS)
  assert same == [("token_embedder/embedding", "token_embedder/embedding")]
  # A pattern matched in full; a different value is a re template expanded with the match.
  pairs = weight_copy.plan({"decoder/layers/(self_attention)/(.*)": r"decoder/layers/\1/\2"}, TEACHER, PARAMS)
  assert pairs == sorted((p, p) for p in PARAMS if "/self_attention/" in p)
  assert weight_copy.plan({"decoder/[^/]*_norm/scale": "decoder/[^/]*_norm/scale"}, TEACHER, PARAMS) == [
      ("decoder/decoder_norm/scale", "decoder/decoder_norm/scale")
  ]


@pytest.mark.parametrize(
    "copy_map,needle",
    [
        ({"decoder/layers/mlp/wi_0/kernel": "decoder/layers/mlp/wi_0/kernel"}, "shape"),
        ({"layers/mlp/wo/kernel": "layers/mlp/wo/kernel"}, "matches none"),  # fullmatch: no prefix match
        ({"token_embedder/(.*)": r"decoder/\1"}, "does not have"),
        ({"decoder/(decoder_norm|extra)/scale": "decoder/decoder_norm/scale"}, "both"),
        ({"(": "x"}, "regular expression"),
    ],
)
def test_bad_copy_maps_are_refused(copy_map, needle):
  with pytest.raises(errors.ConfigError, match="distill_weights_copy_map") as info:
    weight_copy.plan(copy_map, TEACHER, PARAMS)
  assert needle in str(info.value)
