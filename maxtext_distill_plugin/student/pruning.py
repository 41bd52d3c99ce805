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

"""Depth pruning of a MaxText checkpoint: the starting student of a pruning-recovery distillation.

A MaxText checkpoint's ``items`` holds the weights in the Linen layout,
``{"params": {"params": {"decoder": ..., "token_embedder": ...}}}``. With
``scan_layers=True`` the decoder layers are one subtree, ``decoder/layers``,
whose every array carries the layer axis at ``param_scan_axis`` (1 by default);
without scanning they are ``decoder/layers_0``, ``decoder/layers_1``, ...

:func:`prune_layers` keeps the chosen layers, in order, and every weight
outside them (embedding, final norm, output projection) unchanged, and writes a
params-only checkpoint that ``load_parameters_path`` loads into a model of the
same width with ``base_num_decoder_layers=len(keep_layers)``. Reading and
writing go through MaxText's own ``load_params_from_path`` and
``save_params_to_path``, so the layout is MaxText's by construction.
"""

import dataclasses
import os
import re

from absl import logging
import numpy as np

_UNSCANNED = re.compile(r"^layers_(\d+)$")


@dataclasses.dataclass(frozen=True)
class PruneReport:
  """What :func:`prune_layers` did."""

  source_layers: int
  kept_layers: tuple[int, ...]
  scanned: bool
  dst_items_dir: str


class PruningError(ValueError):
  """The checkpoint or the layer selection cannot be pruned as asked."""


def _checkpoint_root(items_dir: str) -> str:
  items_dir = os.path.abspath(items_dir).rstrip("/")
  if os.path.basename(items_dir) != "items":
    raise PruningError(f"{items_dir} is not a checkpoint 'items' directory; pass <run>/checkpoints/<step>/items.")
  return os.path.dirname(items_dir)


def _abstract_params(src_items_dir: str):
  """Shapes and dtypes of the stored ``params`` tree, placed on the first device."""
  import jax  # pylint: disable=import-outside-toplevel
  from orbax.checkpoint import v1 as ocp  # pylint: disable=import-outside-toplevel

  stored = ocp.metadata(_checkpoint_root(src_items_dir), checkpointable_name="items").metadata
  if not isinstance(stored, dict) or "params" not in stored:
    raise PruningError(f"{src_items_dir} holds no 'params' item; is it a MaxText checkpoint?")
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), stored["params"])


def read_params(src_items_dir: str) -> dict:
  """The Linen-layout ``{"params": {...}}`` weights of a checkpoint, as NumPy arrays (no optimizer state)."""
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.common import checkpointing  # pylint: disable=import-outside-toplevel

  restored = checkpointing.load_params_from_path(src_items_dir, _abstract_params(src_items_dir), 1)
  return jax.tree.map(np.asarray, restored)


def _decoder(params: dict) -> dict:
  try:
    return params["params"]["decoder"]
  except (KeyError, TypeError) as e:
    raise PruningError("no params/decoder subtree: not the Linen layout of a MaxText decoder checkpoint.") from e


def count_layers(params: dict, scan_axis: int = 1) -> tuple[int, bool]:
  """``(number of decoder layers, scanned?)``; refuses trees whose layer arrays disagree."""
  decoder = _decoder(params)
  unscanned = sorted(int(m.group(1)) for m in map(_UNSCANNED.match, decoder) if m)
  if "layers" in decoder:
    if unscanned:
      raise PruningError("the decoder has both 'layers' and 'layers_N' subtrees; only one kind can be pruned.")
    sizes = set()
    for path, leaf in _leaves(decoder["layers"], ("decoder", "layers")):
      if leaf.ndim <= scan_axis:
        raise PruningError(f"{'/'.join(path)} has shape {leaf.shape}: no layer axis at param_scan_axis={scan_axis}.")
      sizes.add(leaf.shape[scan_axis])
    if len(sizes) != 1:
      raise PruningError(f"layer arrays disagree on the layer count at axis {scan_axis}: {sorted(sizes)}.")
    return sizes.pop(), True
  if unscanned:
    if unscanned != list(range(len(unscanned))):
      raise PruningError(f"unscanned layers are not numbered 0..N-1: {unscanned}.")
    return len(unscanned), False
  raise PruningError(f"no decoder layers found; decoder holds {sorted(decoder)}.")


def _leaves(tree, prefix=()):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _leaves(value, prefix + (str(key),))
  else:
    yield prefix, tree


def _check_keep(keep_layers, source_layers: int) -> tuple[int, ...]:
  keep = tuple(int(i) for i in keep_layers)
  if not keep:
    raise PruningError("keep_layers is empty; keep at least one layer.")
  if any(i < 0 or i >= source_layers for i in keep):
    raise PruningError(f"keep_layers={list(keep)} out of range: the checkpoint has layers 0..{source_layers - 1}.")
  if list(keep) != sorted(set(keep)):
    raise PruningError(f"keep_layers={list(keep)} must be unique and increasing, e.g. [0, 2].")
  return keep


def prune_tree(params: dict, keep_layers, scan_axis: int = 1) -> dict:
  """A copy of ``params`` with only the decoder layers ``keep_layers``; other weights are shared."""
  source_layers, scanned = count_layers(params, scan_axis)
  keep = _check_keep(keep_layers, source_layers)
  decoder = dict(_decoder(params))
  if scanned:
    index = np.asarray(keep)
    decoder["layers"] = _map_leaves(decoder["layers"], lambda x: np.take(x, index, axis=scan_axis))
  else:
    old = {i: decoder.pop(f"layers_{i}") for i in range(source_layers)}
    decoder.update({f"layers_{new}": old[i] for new, i in enumerate(keep)})
  inner = dict(params["params"])
  inner["decoder"] = decoder
  return {**params, "params": inner}


def _map_leaves(tree, fn):
  if isinstance(tree, dict):
    return {k: _map_leaves(v, fn) for k, v in tree.items()}
  return fn(tree)


def _expected_shapes(params: dict, keep: tuple[int, ...], scanned: bool, scan_axis: int) -> dict:
  """Path -> shape every pruned array must have, derived from the source independently of :func:`prune_tree`."""
  expected = {}
  renumber = {f"layers_{i}": f"layers_{new}" for new, i in enumerate(keep)}
  for path, leaf in _leaves(params):
    shape = list(leaf.shape)
    if path[:2] == ("params", "decoder") and len(path) > 2:
      if scanned and path[2] == "layers":
        shape[scan_axis] = len(keep)
      elif not scanned and _UNSCANNED.match(path[2]):
        if path[2] not in renumber:
          continue
        path = path[:2] + (renumber[path[2]],) + path[3:]
    expected[path] = tuple(shape)
  return expected


def _check_saved(dst_items_dir: str, expected: dict) -> None:
  stored = _abstract_params(dst_items_dir)
  got = {path: tuple(leaf.shape) for path, leaf in _leaves(stored)}
  if got != expected:
    diff = sorted(set(got.items()) ^ set(expected.items()))
    raise PruningError(f"the written checkpoint does not have the expected shapes: {diff[:6]}")


def prune_layers(src_items_dir: str, dst_items_dir: str, keep_layers: list[int], *, scan_axis: int = 1) -> PruneReport:
  """Writes a checkpoint of ``src_items_dir`` with only the decoder layers ``keep_layers``.

  Args:
    src_items_dir: a MaxText checkpoint, ``<run>/checkpoints/<step>/items``.
    dst_items_dir: where to write; must end in ``items`` (e.g. ``<dir>/0/items``)
      and is what ``load_parameters_path`` should point at.
    keep_layers: the layers to keep, unique and increasing, e.g. ``[0, 2]``.
    scan_axis: the layer axis of scanned weights (MaxText's ``param_scan_axis``).

  Returns:
    A :class:`PruneReport`.

  Raises:
    PruningError: the selection is invalid, the checkpoint is not a MaxText
      decoder, or the written checkpoint's shapes are not the expected ones.
  """
  from maxtext.common import checkpointing  # pylint: disable=import-outside-toplevel

  dst_root = _checkpoint_root(dst_items_dir)
  params = read_params(src_items_dir)
  source_layers, scanned = count_layers(params, scan_axis)
  keep = _check_keep(keep_layers, source_layers)
  pruned = prune_tree(params, keep, scan_axis)
  os.makedirs(os.path.dirname(dst_root), exist_ok=True)
  checkpointing.save_params_to_path(dst_root, pruned)
  _check_saved(dst_items_dir, _expected_shapes(params, keep, scanned, scan_axis))
  logging.info("Pruned %s: kept layers %s of %d -> %s", src_items_dir, list(keep), source_layers, dst_items_dir)
  return PruneReport(source_layers, keep, scanned, os.path.abspath(dst_items_dir))
