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

"""Partial training of the student: upstream's ``student_params_to_update``.

Semantics (as MaxText's own distillation trainer reads the key): each entry is a
regular expression *searched* in a student parameter's path written with ``/``
(``decoder/layers/self_attention/query/kernel``); a parameter trains when any
entry matches and is frozen otherwise; an empty list or None trains everything.

How it is carried out: the selection is resolved once, against the student's
abstract parameters (no weights, no compile), into MaxText's own
``trainable_parameters_mask`` with one anchored pattern per trainable array.
MaxText's optimizer then maps the frozen arrays to a stateless
``optax.set_to_zero`` inside ``optax.multi_transform``, so they get no optimizer
state and no update, and MaxText's state sharding and checkpointing handle the
masked state as they do for its pre-training. The compiled step also zeroes the
frozen gradients (:func:`zero_frozen`), so the gradient norm and its clipping
cover the trained arrays only, as upstream's ``wrt`` filter does, and XLA drops
the frozen weight gradients.
"""

import re

import jax
import jax.numpy as jnp

from maxtext_distill_plugin import errors

KEY = "student_params_to_update"
HOST_MASK_KEY = "trainable_parameters_mask"
# A Variable seen as a pytree adds this key to its path (the optimizer's init sees Variables, its update arrays).
_VARIABLE_SUFFIX = "/value"


def param_path(path) -> str:
  """``('decoder', 'layers', 'mlp', 'wi_0', 'kernel')`` -> ``decoder/layers/mlp/wi_0/kernel``."""
  return "/".join(str(p) for p in path)


def compile_templates(templates) -> list[re.Pattern]:
  """The entries of ``student_params_to_update`` as regular expressions; refuses a malformed one."""
  if templates is None:
    return []
  if isinstance(templates, str) or not isinstance(templates, (list, tuple)):
    raise errors.ConfigError(KEY, templates, f'give a list of regular expressions, e.g. {KEY}=["self_attention/"].')
  compiled = []
  for template in templates:
    try:
      compiled.append(re.compile(str(template)))
    except re.error as e:
      raise errors.ConfigError(KEY, template, f"write a valid regular expression ({e}).") from None
  return compiled


def abstract_params(config) -> dict[str, tuple[tuple[int, ...], str]]:
  """``{path: (shape, dtype)}`` of a model's parameters, from ``nnx.eval_shape`` (no weights, no compile)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel

  mesh = maxtext_utils.get_mesh_from_config(config)
  _, model = model_creation_utils.create_nnx_abstract_model(config, mesh)
  return {param_path(path): (tuple(v.shape), str(v.dtype)) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def select(paths, templates) -> list[str]:
  """The paths that train under ``templates`` (upstream's rule: any template found anywhere in the path)."""
  compiled = compile_templates(templates)
  return [p for p in paths if any(t.search(p) for t in compiled)]


def resolve_mask(params: dict[str, tuple], templates) -> list[str]:
  """MaxText ``trainable_parameters_mask`` patterns equivalent to ``templates`` on these parameters.

  Refuses a template that matches no parameter, naming a few real paths.
  """
  paths = sorted(params)
  for template, compiled in zip(templates, compile_templates(templates)):
    if not any(compiled.search(p) for p in paths):
      examples = ", ".join(paths[:4])
      raise errors.ConfigError(
          KEY,
          template,
          f"it matches none of the student's {len(paths)} parameters (e.g. {examples}); each entry is a regular"
          " expression searched in these paths. Fix the pattern or remove it.",
      )
  # Anchored and escaped: exactly these arrays, whether the optimizer sees Variables (init) or arrays (update).
  return [f"^{re.escape(p)}(?:{re.escape(_VARIABLE_SUFFIX)})?$" for p in select(paths, templates)]


def trainable_patterns(config) -> tuple[str, ...] | None:
  """The student's effective trainable patterns (MaxText's mask key), or None when everything trains."""
  patterns = tuple(getattr(config, HOST_MASK_KEY, None) or ())
  return patterns or None


def is_trainable(path: str, patterns) -> bool:
  """Whether the parameter at ``path`` trains under MaxText-style ``patterns`` (None: all train)."""
  if not patterns:
    return True
  path = path.removesuffix(_VARIABLE_SUFFIX)
  return any(re.search(p, path) for p in patterns)


def count(params: dict[str, tuple], patterns) -> tuple[int, int, int, int]:
  """``(trainable values, total values, trainable arrays, total arrays)``."""
  sizes = {p: int(_prod(shape)) for p, (shape, _) in params.items()}
  trained = [p for p in sizes if is_trainable(p, patterns)]
  return sum(sizes[p] for p in trained), sum(sizes.values()), len(trained), len(sizes)


def params_of_state(model_state) -> dict[str, tuple]:
  """``{path: (shape, dtype)}`` of the ``nnx.Param`` arrays of a (concrete or abstract) model state."""
  from flax import nnx  # pylint: disable=import-outside-toplevel

  return {
      param_path(path): (tuple(v.shape), str(v.dtype))
      for path, v in nnx.to_flat_state(model_state)
      if isinstance(v, nnx.Param)
  }


def zero_frozen(grads, patterns):
  """``grads`` with the frozen parameters' entries replaced by zeros (identity when ``patterns`` is None).

  Decided at trace time from the paths, so it costs nothing in the compiled step.
  """
  if not patterns:
    return grads

  def keep_or_zero(path, g):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    return g if is_trainable(name, patterns) else jnp.zeros_like(g)

  return jax.tree_util.tree_map_with_path(keep_or_zero, grads)


def _prod(shape) -> int:
  result = 1
  for d in shape:
    result *= int(d)
  return result
