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

"""Import smoke test run by the set-up script: a missing package fails set-up, not the first run."""

import importlib
import sys

# What MaxText's trainer, checkpointing, input pipeline and our trainer import at run time.
_MODULES = (
    "jax",
    "flax.nnx",
    "optax",
    "orbax.checkpoint",
    "grain",
    "tensorboardX",
    "yaml",
    "tunix",
    "maxtext.configs.pyconfig",
    "maxtext.utils.train_utils",
    "maxtext.utils.model_creation_utils",
    "maxtext.input_pipeline.input_pipeline_interface",
    "datasets",  # dataset_type=hf
    "maxtext.common.checkpointing",
    "maxtext_distill_plugin.configuration.config",
)


def main() -> int:
  failures = []
  for name in _MODULES:
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-exception-caught
      failures.append(f"  {name}: {type(e).__name__}: {e}")
  if failures:
    print("maxtext-distill: the environment is incomplete:\n" + "\n".join(failures), file=sys.stderr)
    print("Fix: rerun tools/bootstrap.sh; if a pin is missing, add it to requirements/lock.txt.", file=sys.stderr)
    return 1
  from maxtext_distill_plugin import _compat  # pylint: disable=import-outside-toplevel

  print(f"maxtext-distill: environment complete (MaxText {_compat.check_host()}).")
  return 0


if __name__ == "__main__":
  sys.exit(main())
