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

"""Serves ``python -m maxtext.trainers.post_train.distillation.train_distill`` and nothing else.

Loaded at interpreter start by ``maxtext_distill_plugin.pth``. It registers an
import finder that answers for the documented module name with the plugin's
entry module only while that name is being located to run as the program:

* ``python -m <documented module>``: while ``-m`` locates its module,
  ``sys.argv[0]`` is ``'-m'`` (documented for ``sys.argv``) and
  ``sys.orig_argv`` holds the module name just before the program's arguments;
* a launcher's ``runpy.run_module(<documented module>, run_name='__main__')``
  (or ``'__mp_main__'``, multiprocessing's re-run of the main module in a spawned
  worker), seen as runpy's lookup on the call stack.

Every other import of the name (a fork's tools and notebooks, MaxText's own
unit tests, the plugin's trainer once it runs) finds the host's own module, so
installing the plugin changes no importer. A fork without the module still gets
the command: the missing parent packages are provided empty, again only while
the name is located to run. ``MAXTEXT_DISTILL_USE_UPSTREAM=1`` steps aside, so
``-m`` runs the host's own module and the two can be compared on one YAML.

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
# The names runpy runs a module under when it is the program (multiprocessing's spawned workers use the second).
_PROGRAM_RUN_NAMES = ("__main__", "__mp_main__")


def use_upstream() -> bool:
  return os.environ.get(UPSTREAM_SWITCH, "").strip().lower() in ("1", "true", "yes")


def dash_m_locates_documented_module() -> bool:
  """True while ``python -m <documented module>`` locates its module (before it runs).

  During that lookup ``sys.argv`` is ``['-m', *program_args]`` and ``sys.orig_argv`` ends with the module name
  (alone, or glued to its option as in ``-m<name>``) followed by the same program arguments.
  """
  argv, orig = sys.argv, getattr(sys, "orig_argv", [])
  if not argv or argv[0] != "-m" or len(orig) < len(argv) + 1:
    return False
  named = orig[len(orig) - len(argv)]
  return named == DOCUMENTED_MODULE or (named.startswith("-") and named.endswith("m" + DOCUMENTED_MODULE))


def runpy_locates_documented_module_as_program() -> bool:
  """True while runpy looks the documented module up to run it as the program (not to import or run it by name)."""
  frame = sys._getframe(1)  # pylint: disable=protected-access
  while frame is not None:
    # By module name, not file: the standard library may run runpy frozen ("<frozen runpy>").
    if frame.f_code.co_name == "_get_module_details" and frame.f_globals.get("__name__") == "runpy":
      if frame.f_locals.get("mod_name") != DOCUMENTED_MODULE:
        return False
      caller = frame.f_back
      if caller is not None and caller.f_code.co_name == "run_module" and caller.f_globals.get("__name__") == "runpy":
        return caller.f_locals.get("run_name") in _PROGRAM_RUN_NAMES
      return True  # python -m's own lookup, or a debugger's (pdb -m) that runs the module as __main__
    frame = frame.f_back
  return False


def runs_as_program() -> bool:
  """Whether the documented module is being located to run as the program, which is when the plugin serves it."""
  return not use_upstream() and (dash_m_locates_documented_module() or runpy_locates_documented_module_as_program())


class _DistillModuleFinder(importlib.abc.MetaPathFinder):
  """Answers for the documented trainer module (and its parents where missing) when it is run as the program."""

  maxtext_distill_hook = True

  def find_spec(self, fullname, path, target=None):
    del target
    if fullname != DOCUMENTED_MODULE and fullname not in _PARENT_NAMES:
      return None
    if not runs_as_program():
      return None
    if fullname == DOCUMENTED_MODULE:
      entry = importlib.util.find_spec(_ENTRY_MODULE)
      return importlib.util.spec_from_file_location(fullname, entry.origin) if entry else None
    if not self._found_elsewhere(fullname, path):
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
