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

"""Depth pruning: the tree surgery, and a pruned MaxText checkpoint that MaxText loads."""

import numpy as np
import pytest

from maxtext_distill_plugin.student import pruning
from tests.conftest import TINY_MODEL_ARGS
from tests.conftest import maxtext_base_yml


def _scanned_tree(layers=4, axis=1):
  rng = np.random.default_rng(0)

  def stacked(*shape):
    shape = list(shape)
    shape.insert(axis, layers)
    return rng.standard_normal(shape).astype(np.float32)

  return {
      "params": {
          "decoder": {
              "layers": {"mlp": {"wi": {"kernel": stacked(8, 16)}}, "norm": {"scale": stacked(8)}},
              "decoder_norm": {"scale": rng.standard_normal(8).astype(np.float32)},
          },
          "token_embedder": {"embedding": rng.standard_normal((32, 8)).astype(np.float32)},
      }
  }


def test_scanned_layers_are_cut_on_the_scan_axis_and_the_rest_is_kept():
  tree = _scanned_tree()
  assert pruning.count_layers(tree) == (4, True)
  pruned = pruning.prune_tree(tree, [0, 2])
  layers = tree["params"]["decoder"]["layers"]
  kernel, scale = layers["mlp"]["wi"]["kernel"], layers["norm"]["scale"]
  np.testing.assert_array_equal(pruned["params"]["decoder"]["layers"]["mlp"]["wi"]["kernel"], kernel[:, [0, 2]])
  np.testing.assert_array_equal(pruned["params"]["decoder"]["layers"]["norm"]["scale"], scale[:, [0, 2]])
  assert pruned["params"]["token_embedder"]["embedding"] is tree["params"]["token_embedder"]["embedding"]
  assert pruned["params"]["decoder"]["decoder_norm"] is tree["params"]["decoder"]["decoder_norm"]
  assert pruning.count_layers(pruned) == (2, True)
  assert tree["params"]["decoder"]["layers"]["mlp"]["wi"]["kernel"].shape == (8, 4, 16)  # source untouched


def test_other_scan_axis():
  tree = _scanned_tree(layers=3, axis=0)
  pruned = pruning.prune_tree(tree, [2], scan_axis=0)
  assert pruned["params"]["decoder"]["layers"]["mlp"]["wi"]["kernel"].shape == (1, 8, 16)


def test_unscanned_layers_are_renumbered():
  tree = {"params": {"decoder": {f"layers_{i}": {"w": np.full((2,), i)} for i in range(4)}}}
  assert pruning.count_layers(tree) == (4, False)
  pruned = pruning.prune_tree(tree, [1, 3])
  assert sorted(pruned["params"]["decoder"]) == ["layers_0", "layers_1"]
  assert pruned["params"]["decoder"]["layers_0"]["w"][0] == 1 and pruned["params"]["decoder"]["layers_1"]["w"][0] == 3


@pytest.mark.parametrize("keep", [[], [4], [-1], [2, 1], [1, 1]])
def test_bad_selections_are_refused(keep):
  with pytest.raises(pruning.PruningError):
    pruning.prune_tree(_scanned_tree(), keep)


def test_inconsistent_layer_counts_are_refused():
  tree = _scanned_tree()
  tree["params"]["decoder"]["layers"]["norm"]["scale"] = np.zeros((8, 3), np.float32)
  with pytest.raises(pruning.PruningError, match="disagree"):
    pruning.count_layers(tree)


def test_pruned_checkpoint_loads_into_a_shallower_maxtext_model(teacher_checkpoint, tmp_path):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel

  dst = tmp_path / "pruned" / "0" / "items"
  report = pruning.prune_layers(teacher_checkpoint, str(dst), [1])
  assert (report.source_layers, report.kept_layers, report.scanned) == (2, (1,), True)

  source = pruning.read_params(teacher_checkpoint)["params"]
  written = pruning.read_params(str(dst))["params"]
  np.testing.assert_array_equal(written["token_embedder"]["embedding"], source["token_embedder"]["embedding"])
  query = source["decoder"]["layers"]["self_attention"]["query"]["kernel"]
  np.testing.assert_array_equal(written["decoder"]["layers"]["self_attention"]["query"]["kernel"], query[:, 1:2])

  cfg = pyconfig.initialize(
      ["test", maxtext_base_yml(), "run_name=pruned", f"base_output_directory={tmp_path}", *TINY_MODEL_ARGS]
      + ["base_num_decoder_layers=1", "scan_layers=True", f"load_parameters_path={dst}"]
  )
  model = model_creation_utils.from_pretrained(cfg)
  loaded = {
      tuple(str(p) for p in path): np.asarray(leaf.get_value() if hasattr(leaf, "get_value") else leaf)
      for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param))
  }
  query_paths = [k for k in loaded if k[-3:] == ("self_attention", "query", "kernel")]
  assert len(query_paths) == 1
  np.testing.assert_array_equal(loaded[query_paths[0]], query[:, 1:2])


def test_refuses_a_destination_that_is_not_items(tmp_path):
  with pytest.raises(pruning.PruningError, match="items"):
    pruning.prune_layers(str(tmp_path / "src" / "items"), str(tmp_path / "dst"), [0])
