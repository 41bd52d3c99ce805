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

"""Checks the host MaxText: its version and the capabilities the plugin uses.

The plugin reuses MaxText's config system, model construction, training-state
setup and checkpointing. A host that is too old, too new or a fork that moved
one of those pieces fails here, once, with the installed version, the
supported range and the command that fixes it.
"""

import importlib
import importlib.metadata
import inspect

SUPPORTED_RANGE = ">=0.2.5,<0.3"
_MIN = (0, 2, 5)
_MAX_EXCLUSIVE = (0, 3, 0)
FIX_COMMAND = 'pip install "maxtext>=0.2.5,<0.3"'

# (module, attribute) pairs the plugin calls; a fork must keep them.
REQUIRED_CAPABILITIES = (
    ("maxtext.configs.pyconfig", "initialize"),
    ("maxtext.configs.types", "MaxTextConfig"),
    ("maxtext.utils.train_utils", "setup_train_loop"),
    ("maxtext.utils.model_creation_utils", "from_pretrained"),
    ("maxtext.utils.maxtext_utils", "get_intermediate_value"),
    ("maxtext.common.checkpointing", "maybe_save_checkpoint"),
    ("maxtext.layers.attentions", "Attention"),
)


class HostIncompatibleError(RuntimeError):
  """The installed MaxText cannot host the plugin."""


def _parse_version(text: str) -> tuple[int, ...]:
  parts = []
  for piece in text.split(".")[:3]:
    digits = "".join(ch for ch in piece if ch.isdigit())
    parts.append(int(digits or 0))
  return tuple(parts + [0] * (3 - len(parts)))


def maxtext_version() -> str:
  """The installed MaxText distribution version, or 'not installed'."""
  try:
    return importlib.metadata.version("maxtext")
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def plugin_version() -> str:
  from maxtext_distill_plugin import __version__  # pylint: disable=import-outside-toplevel

  return __version__


def check_host(*, check_capabilities: bool = True) -> str:
  """Raises HostIncompatibleError unless the host MaxText is supported; returns its version."""
  version = maxtext_version()
  if version == "not installed":
    raise HostIncompatibleError(
        f"MaxText is not installed; maxtext-distill supports maxtext{SUPPORTED_RANGE}. Fix: {FIX_COMMAND}"
    )
  if not _MIN <= _parse_version(version) < _MAX_EXCLUSIVE:
    raise HostIncompatibleError(
        f"Installed MaxText {version} is outside the supported range maxtext{SUPPORTED_RANGE}. Fix: {FIX_COMMAND}"
    )
  if check_capabilities:
    missing = []
    for module_name, attribute in REQUIRED_CAPABILITIES:
      try:
        module = importlib.import_module(module_name)
      except ImportError as e:
        missing.append(f"{module_name} ({e})")
        continue
      if not hasattr(module, attribute):
        missing.append(f"{module_name}.{attribute}")
    if missing:
      raise HostIncompatibleError(
          f"Installed MaxText {version} lacks what the plugin needs: {', '.join(missing)}."
          f" Supported: maxtext{SUPPORTED_RANGE}. Fix: {FIX_COMMAND}"
      )
    from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel

    if "config_class" not in inspect.signature(pyconfig.initialize).parameters:
      raise HostIncompatibleError(
          f"MaxText {version}: pyconfig.initialize takes no config_class, so the plugin cannot add its config keys."
          f" Fix: {FIX_COMMAND}"
      )
  return version


def ensure_absl_flags_parsed() -> None:
  """Marks absl's flags parsed, as ``absl.app.run`` does in MaxText's own entry points.

  Grain's worker processes (``grain_worker_count >= 1``) read an absl flag, which raises
  ``UnparsedFlagAccessError`` unless the flags were parsed; the plugin's ``key=value`` arguments are not absl flags.
  A no-op when the host already parsed them.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
