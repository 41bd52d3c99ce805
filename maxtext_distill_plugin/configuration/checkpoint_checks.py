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

"""Checks a checkpoint's parameters against the model its config builds, before any model is built or compiled.

MaxText's teacher loader (``from_pretrained``) stretches a checkpoint axis that divides the model's (a 2-layer
checkpoint fills a 4-layer teacher by repetition) and fails on the others deep in the load (``Cannot align axis``);
a partial restore leaves missing weights at their initial values. Here the checkpoint's Orbax metadata (names,
shapes and dtypes; no array is read, about 0.1 s) is compared with the model's abstract parameters
(``nnx.eval_shape``: no weights, no compile). A difference is refused naming the config key that disagrees, inferred
from which axis of which parameter differs (``base_num_decoder_layers``, ``base_emb_dim``, ...), with the
checkpoint's value and the config's; where no key explains it, the parameter paths and both shapes are named.
Dtypes may differ (MaxText casts on restore): a difference is logged, not refused.
"""

import collections
import os
import re

from absl import logging

from maxtext_distill_plugin import errors

# (config key, resolved config attribute, what a parameter path must contain for an axis to be that key's).
_SHAPE_KEYS = (
    ("vocab_size", "vocab_size", ("token_embedder/", "logits_dense/")),
    ("base_num_decoder_layers", "num_decoder_layers", ("decoder/layers/",)),
    ("base_emb_dim", "emb_dim", ("",)),
    ("base_num_query_heads", "num_query_heads", ("/query/", "/out/", "/wq_b/")),
    ("base_num_kv_heads", "num_kv_heads", ("/key/", "/value/")),
    ("head_dim", "head_dim", ("/query/", "/key/", "/value/", "/out/")),
    ("base_mlp_dim", "mlp_dim", ("mlp/wi", "mlp/wo", "shared_experts/")),
    ("base_moe_mlp_dim", "moe_mlp_dim", ("MoeBlock", "moe")),
    ("num_experts", "num_experts", ("MoeBlock", "moe", "gate/")),
    ("first_num_dense_layers", "first_num_dense_layers", ("dense_layers/",)),
    ("q_lora_rank", "q_lora_rank", ("wq_a/", "wq_b/", "q_norm/")),
    ("kv_lora_rank", "kv_lora_rank", ("wkv_a/", "wkv_b/", "kv_norm/")),
    ("qk_nope_head_dim", "qk_nope_head_dim", ("wq_b/", "wkv_b/")),
    ("qk_rope_head_dim", "qk_rope_head_dim", ("wq_b/", "wkv_a/")),
    ("v_head_dim", "v_head_dim", ("wkv_b/", "/out/")),
)
_UNSCANNED_LAYER = re.compile(r"(^|/)layers_(\d+)/")
_EXAMPLES = 3

Params = dict[str, tuple[tuple[int, ...], str]]  # parameter path -> (shape, dtype)


def check_run(configs, student_overrides: dict) -> None:
  """Checks the teacher's checkpoint and a loaded student's against their models; exit 2 on a mismatch.

  The teacher's keys are named as ``teacher_overrides`` keys (the teacher is YAML < ``teacher_overrides``); the
  student's as set in ``student_overrides`` or else as top-level keys.
  """
  if configs.teacher is not None:
    check(configs.teacher, "teacher", lambda key: f"teacher_overrides.{key}")
  if configs.student.load_parameters_path:
    check(configs.student, "student", lambda key: f"student_overrides.{key}" if key in student_overrides else key)


def check(config, label: str, key_name) -> None:
  """Refuses ``config.load_parameters_path`` when its parameters are not the ones ``config``'s model has.

  Args:
    config: a MaxText config with ``load_parameters_path`` set.
    label: ``teacher`` or ``student``, for the message.
    key_name: maps a config key to the name the user sets it by (e.g. ``teacher_overrides.base_emb_dim``).
  """
  path = str(config.load_parameters_path)
  if getattr(config, "quantization", "") or getattr(config, "enable_lora", False):
    logging.info("%s checkpoint check skipped: quantized and LoRA parameters are matched by MaxText's loader.", label)
    return
  stored = stored_params(path)
  if stored is None:
    return
  from maxtext_distill_plugin.student import freezing  # pylint: disable=import-outside-toplevel

  try:
    expected = freezing.abstract_params(config)
  except Exception as e:  # pylint: disable=broad-except
    # e.g. a mesh for another topology than this host's devices (a dry run of a pod's config): the loader decides.
    logging.warning("%s checkpoint check skipped: no abstract model here (%s: %s)", label, type(e).__name__, e)
    return
  problem = describe_mismatch(stored, expected, config, key_name)
  if problem is not None:
    key, config_value, fix = problem
    raise errors.ConfigError(key, config_value, f"the {label} checkpoint {path} does not fit the {label} model: {fix}")
  casts = [f"{p} {stored[p][1]}->{e[1]}" for p, e in sorted(expected.items()) if p in stored and stored[p][1] != e[1]]
  if casts:
    logging.info("%s checkpoint: %d arrays are cast on restore, e.g. %s", label, len(casts), ", ".join(casts[:3]))


def stored_params(path: str) -> Params | None:
  """``{path: (shape, dtype)}`` of a checkpoint's parameters from its Orbax metadata (no array is read).

  Returns None, logging why, where the metadata cannot be read or has a layout this check does not know; MaxText's
  loader then decides.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  items = path.rstrip("/")
  if not items.endswith("/items") and "://" not in items and os.path.isdir(os.path.join(items, "items")):
    items = os.path.join(items, "items")
  try:
    metadata = ocp.PyTreeCheckpointer().metadata(items)
    tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata.tree
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("checkpoint check skipped: the metadata of %s could not be read (%s: %s)", path, type(e).__name__, e)
    return None
  if not (isinstance(tree.get("params"), dict) and isinstance(tree["params"].get("params"), dict)):
    # Not the layout MaxText's trainers write (an NNX state, a converted model's tree): its loader decides.
    logging.info("checkpoint check skipped: %s does not hold MaxText's params/params tree", path)
    return None
  flat = {
      name: (tuple(int(d) for d in leaf.shape), str(getattr(leaf, "dtype", "")))
      for name, leaf in _flatten(tree["params"]["params"])
      if hasattr(leaf, "shape")
  }
  if not flat:
    logging.warning("checkpoint check skipped: no parameter arrays found in the metadata of %s", path)
    return None
  return flat


def _flatten(tree, prefix: str = ""):
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, dict):
      yield from _flatten(value, name)
    else:
      yield name, value


def describe_mismatch(stored: Params, expected: Params, config, key_name=str) -> tuple[str, object, str] | None:
  """``(the key to change, the config's value, the fix)`` for the first difference; None when they match.

  Args:
    stored: the checkpoint's parameters.
    expected: the model's abstract parameters.
    config: the model's config (the values a shape is compared with).
    key_name: maps a config key to the name the user sets it by (e.g. ``teacher_overrides.base_emb_dim``).
  """
  stored = _fuse_split_gates(stored, expected)
  missing = sorted(p for p in expected if p not in stored and "lora_" not in p)
  extra = sorted(p for p in stored if p not in expected)
  shape_diffs = [
      (p, stored[p][0], expected[p][0]) for p in sorted(expected) if p in stored and stored[p][0] != expected[p][0]
  ]
  if shape_diffs:
    inferred = _infer_keys(shape_diffs, config)
    if inferred:
      made = ", ".join(f"{k}={v} (config: {getattr(config, k)})" for k, v, _ in inferred)
      settings = " ".join(f"{key_name(k)}={v}" for k, v, _ in inferred)
      key = inferred[0][0]
      fix = f"it was made with {made}; e.g. {inferred[0][2]}. Set {settings}, or load a checkpoint made with this config."
      if len(inferred) >= 3:
        fix += f" With {len(inferred)} keys apart it is likely another model than model_name={config.model_name}."
      return key_name(key), getattr(config, key), fix
    listed = "; ".join(f"{p}: checkpoint {s}, model {e}" for p, s, e in shape_diffs[:_EXAMPLES])
    fix = f"{len(shape_diffs)} parameters differ in shape ({listed}). {_generic_fix(config)}"
    return key_name("load_parameters_path"), config.load_parameters_path, fix
  if missing or extra:
    return _describe_names(missing, extra, config, key_name)
  return None


def _generic_fix(config) -> str:
  block = getattr(getattr(config, "decoder_block", None), "value", getattr(config, "decoder_block", None))
  return (
      "Use the model config the checkpoint was made with: model_name, decoder_block and the shape keys (this config:"
      f" model_name={getattr(config, 'model_name', None)}, decoder_block={block})."
  )


def _fuse_split_gates(stored: Params, expected: Params) -> Params:
  """MaxText's loader fuses a checkpoint's ``wi_0``/``wi_1`` into a model's ``wi``: compare them fused too."""
  fused = dict(stored)
  for name, (_, dtype) in expected.items():
    head, sep, tail = name.rpartition("/wi/")
    if not sep or name in stored:
      continue
    gate, up = f"{head}/wi_0/{tail}", f"{head}/wi_1/{tail}"
    if gate in stored and up in stored:
      fused[name] = (stored[gate][0][:-1] + (stored[gate][0][-1] + stored[up][0][-1],), dtype)
      del fused[gate], fused[up]
  return fused


def _infer_keys(shape_diffs, config) -> list[tuple[str, int, str]]:
  """The config keys whose values explain the differing axes: ``(key, checkpoint value, e.g.)``, most explained first.

  Each differing axis is a candidate of every key whose config value equals the model's size there and whose
  parameters the path names; keys are then taken greedily by how many still unexplained axes they explain, so a size
  that only coincides with another key's (4 layers, 4 heads) is not named.
  """
  explains: dict[tuple[str, int], set] = collections.defaultdict(set)
  examples: dict[tuple[str, int], str] = {}
  for path, ckpt_shape, model_shape in shape_diffs:
    if len(ckpt_shape) != len(model_shape):
      continue
    for axis, (ckpt_dim, model_dim) in enumerate(zip(ckpt_shape, model_shape)):
      if ckpt_dim == model_dim:
        continue
      for key, attr, path_parts in _SHAPE_KEYS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value == model_dim and any(part in f"/{path}" for part in path_parts):
          explains[(key, ckpt_dim)].add((path, axis))
          examples.setdefault((key, ckpt_dim), f"{path}: checkpoint {ckpt_shape}, model {model_shape}")
  inferred, explained = [], set()
  while True:
    gains = {candidate: len(axes - explained) for candidate, axes in explains.items()}
    best = max(gains, key=gains.get, default=None)
    if best is None or gains[best] == 0:
      return inferred
    explained |= explains.pop(best)
    inferred.append((best[0], best[1], examples[best]))
    for other in [c for c in explains if c[0] == best[0]]:  # one value per key: the one that explains most
      del explains[other]


def _describe_names(missing: list[str], extra: list[str], config, key_name) -> tuple[str, object, str]:
  """Missing or unexpected parameter names: a scan_layers or layer-count difference, else the names themselves."""
  scanned_model = any("decoder/layers/" in p for p in missing)
  scanned_ckpt = any("decoder/layers/" in p for p in extra)
  unscanned_model = any(_UNSCANNED_LAYER.search(p) for p in missing)
  unscanned_ckpt = any(_UNSCANNED_LAYER.search(p) for p in extra)
  if scanned_model != scanned_ckpt and unscanned_model != unscanned_ckpt:
    key = key_name("scan_layers")
    return key, config.scan_layers, f"it was saved with scan_layers={scanned_ckpt}. Set {key}={scanned_ckpt}."
  layer_ids = {int(m.group(2)) for p in missing + extra for m in [_UNSCANNED_LAYER.search(p)] if m}
  only_layers = layer_ids and all(_UNSCANNED_LAYER.search(p) for p in missing + extra)
  if only_layers and (not missing or not extra):
    layers = max(layer_ids) + 1 if not missing else min(layer_ids)
    key = key_name("base_num_decoder_layers")
    fix = f"it has {layers} layers. Set {key}={layers}, or load a checkpoint made with this config."
    return key, config.base_num_decoder_layers, fix
  parts = []
  if missing:
    parts.append(f"{len(missing)} model parameters are not in the checkpoint (e.g. {', '.join(missing[:_EXAMPLES])})")
  if extra:
    parts.append(f"{len(extra)} checkpoint parameters are not in the model (e.g. {', '.join(extra[:_EXAMPLES])})")
  return key_name("load_parameters_path"), config.load_parameters_path, "; ".join(parts) + f". {_generic_fix(config)}"
