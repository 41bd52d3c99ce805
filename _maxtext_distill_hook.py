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

"""Serves ``python -m maxtext.trainers.post_train.distillation.train_distill``.

Loaded at interpreter start by ``maxtext_distill_plugin.pth``. It registers an
import finder that answers for the documented module name with the plugin's
entry module, so the spec's command runs this trainer whether the installed
MaxText ships its own (0.2.5 does) or not (a fork). Missing parent packages
are provided empty. ``MAXTEXT_DISTILL_USE_UPSTREAM=1`` steps aside, so the
host's own module runs and the two can be compared on one YAML.

Must stay import-light: no JAX, no MaxText, not even the plugin package (the wheel
ships this file at the top level of site-packages,
which the ``.pth`` imports, so the package itself is resolved on use against
the ``sys.path`` of that moment).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

UPSTREAM_SWITCH = "MAXTEXT_DISTILL_USE_UPSTREAM"
DOCUMENTED_MODULE = "maxtext.trainers.post_train.distillation.train_distill"
_ENTRY_MODULE = "maxtext_distill_plugin.train_distill"
_PARENTS = tuple(DOCUMENTED_MODULE.split(".")[:i] for i in range(2, 4 + 1))
_PARENT_NAMES = frozenset(".".join(p) for p in _PARENTS)


def use_upstream() -> bool:
  return os.environ.get(UPSTREAM_SWITCH, "").strip().lower() in ("1", "true", "yes")


class _DistillModuleFinder(importlib.abc.MetaPathFinder):
  """Answers for the documented trainer module (and its parents where missing)."""

  maxtext_distill_hook = True

  def find_spec(self, fullname, path, target=None):
    del target
    if use_upstream():
      return None
    if fullname == DOCUMENTED_MODULE:
      entry = importlib.util.find_spec(_ENTRY_MODULE)
      return importlib.util.spec_from_file_location(fullname, entry.origin) if entry else None
    if fullname in _PARENT_NAMES and not self._found_elsewhere(fullname, path):
      spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
      spec.submodule_search_locations = []
      return spec
    return None

  def _found_elsewhere(self, fullname, path) -> bool:
    for finder in sys.meta_path:
      if finder is self or not hasattr(finder, "find_spec"):
        continue
      if finder.find_spec(fullname, path) is not None:
        return True
    return False


def install() -> None:
  if not any(getattr(f, "maxtext_distill_hook", False) for f in sys.meta_path):
    sys.meta_path.insert(0, _DistillModuleFinder())


install()
