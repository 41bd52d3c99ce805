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

"""The checkpoint check's comparison and key inference, on parameter tables shaped like MaxText's (no model built)."""

import re
import types

from maxtext_distill_plugin.configuration import checkpoint_checks

_F32 = "float32"


def _config(**values):
  defaults = {
      "num_decoder_layers": 2, "base_num_decoder_layers": 2, "emb_dim": 64, "mlp_dim": 128, "vocab_size": 512,
      "num_query_heads": 4, "num_kv_heads": 4, "head_dim": 16, "scan_layers": True, "load_parameters_path": "/ckpt",
      "model_name": "default",
  }  # fmt: skip
  defaults.update(values)
  for attr, key in (
      ("emb_dim", "base_emb_dim"),
      ("mlp_dim", "base_mlp_dim"),
      ("num_query_heads", "base_num_query_heads"),
  ):
    defaults.setdefault(key, defaults[attr])
  defaults.setdefault("base_num_kv_heads", defaults["num_kv_heads"])
  return types.SimpleNamespace(**defaults)


def _llama(layers=2, emb=64, mlp=128, vocab=512, heads=4, kv_heads=4, head_dim=16, scanned=True):
  """The parameter table of MaxText's tiny llama decoder (scan axis 1), as the checkpoint metadata lists it."""
  per_layer = {
      "mlp/wi_0/kernel": (emb, mlp), "mlp/wi_1/kernel": (emb, mlp), "mlp/wo/kernel": (mlp, emb),
      "pre_self_attention_layer_norm/scale": (emb,), "post_self_attention_layer_norm/scale": (emb,),
      "self_attention/query/kernel": (emb, heads, head_dim), "self_attention/key/kernel": (emb, kv_heads, head_dim),
      "self_attention/value/kernel": (emb, kv_heads, head_dim), "self_attention/out/kernel": (heads, head_dim, emb),
  }  # fmt: skip
  table = {
      "decoder/decoder_norm/scale": ((emb,), _F32),
      "decoder/logits_dense/kernel": ((emb, vocab), _F32),
      "token_embedder/embedding": ((vocab, emb), _F32),
  }
  for name, shape in per_layer.items():
    if scanned:
      table[f"decoder/layers/{name}"] = ((shape[0], layers, *shape[1:]), _F32)
    else:
      table.update({f"decoder/layers_{i}/{name}": (shape, _F32) for i in range(layers)})
  return table


def _key(stored, expected, config, key_name=str):
  problem = checkpoint_checks.describe_mismatch(stored, expected, config, key_name)
  assert problem is not None
  return problem


def test_matching_tables_pass_and_dtypes_are_not_refused():
  model = _llama()
  checkpoint = {path: (shape, "bfloat16") for path, (shape, _) in model.items()}
  assert checkpoint_checks.describe_mismatch(checkpoint, model, _config()) is None


def test_layer_count_is_named_even_where_it_equals_the_head_count():
  # 4 model layers against 2 stored: the heads axes are 4 too; only the layer count explains every differing axis.
  key, value, fix = _key(_llama(layers=2), _llama(layers=4), _config(num_decoder_layers=4, base_num_decoder_layers=4))
  assert (key, value) == ("base_num_decoder_layers", 4)
  assert "base_num_decoder_layers=2 (config: 4)" in fix and "heads" not in fix


def test_width_and_two_keys_at_once_with_the_users_key_names():
  config = _config(emb_dim=96, head_dim=8)
  key, value, fix = _key(_llama(), _llama(emb=96, head_dim=8), config, lambda k: f"teacher_overrides.{k}")
  assert (key, value) == ("teacher_overrides.base_emb_dim", 96)
  assert "Set teacher_overrides.base_emb_dim=64 teacher_overrides.head_dim=16" in fix


def test_vocabulary_mlp_and_kv_heads():
  assert _key(_llama(), _llama(vocab=1024), _config(vocab_size=1024))[:2] == ("vocab_size", 1024)
  assert _key(_llama(), _llama(mlp=256), _config(mlp_dim=256))[:2] == ("base_mlp_dim", 256)
  assert _key(_llama(kv_heads=2), _llama(kv_heads=4), _config())[:2] == ("base_num_kv_heads", 4)


def test_an_unexplained_shape_names_the_parameter_and_both_shapes():
  expected = _llama()
  expected["decoder/decoder_norm/scale"] = ((70,), _F32)  # a size no shape key of the config has
  key, value, fix = _key(_llama(), expected, _config())
  assert (key, value) == ("load_parameters_path", "/ckpt")
  assert "decoder/decoder_norm/scale: checkpoint (64,), model (70,)" in fix


def test_missing_and_extra_parameters_are_refused():
  stored = _llama()
  stored["decoder/extra_block/kernel"] = ((64, 64), _F32)
  del stored["decoder/logits_dense/kernel"]
  key, _, fix = _key(stored, _llama(), _config())
  assert key == "load_parameters_path"
  assert "1 model parameters are not in the checkpoint (e.g. decoder/logits_dense/kernel)" in fix
  assert "1 checkpoint parameters are not in the model (e.g. decoder/extra_block/kernel)" in fix


def test_scan_layers_and_unscanned_layer_count():
  key, value, fix = _key(_llama(scanned=True), _llama(scanned=False), _config(scan_layers=False))
  assert (key, value) == ("scan_layers", False) and "scan_layers=True" in fix
  config = _config(scan_layers=False, num_decoder_layers=3, base_num_decoder_layers=3)
  key, value, fix = _key(_llama(scanned=False), _llama(layers=3, scanned=False), config)
  assert (key, value) == ("base_num_decoder_layers", 3) and "it has 2 layers" in fix
  key, value, fix = _key(_llama(layers=3, scanned=False), _llama(scanned=False), _config(scan_layers=False))
  assert (key, value) == ("base_num_decoder_layers", 2) and "it has 3 layers" in fix


def test_split_gates_match_a_fused_model_and_lora_may_be_absent():
  stored = {"decoder/moe/wi_0/kernel": ((4, 64, 32), _F32), "decoder/moe/wi_1/kernel": ((4, 64, 32), _F32)}
  expected = {"decoder/moe/wi/kernel": ((4, 64, 64), _F32), "decoder/q/lora_a/kernel": ((64, 8), _F32)}
  assert checkpoint_checks.describe_mismatch(stored, expected, _config()) is None


def test_another_model_names_each_key_once():
  # A llama3.1-8b-like config against the tiny checkpoint: 32 layers and 32 query heads share a size.
  config = _config(
      num_decoder_layers=32, base_num_decoder_layers=32, emb_dim=4096, mlp_dim=14336, vocab_size=128256,
      num_query_heads=32, num_kv_heads=8, head_dim=128, model_name="llama3.1-8b",
  )  # fmt: skip
  expected = _llama(layers=32, emb=4096, mlp=14336, vocab=128256, heads=32, kv_heads=8, head_dim=128)
  key, value, fix = _key(_llama(kv_heads=2), expected, config)
  assert (key, value) == ("base_emb_dim", 4096)
  named = re.findall(r"(\w+)=\d+ \(config: \d+\)", fix)
  assert sorted(named) == sorted(set(named)) and "base_num_decoder_layers=2 (config: 32)" in fix
  assert "base_num_query_heads=4 (config: 32)" in fix and "another model than model_name=llama3.1-8b" in fix
