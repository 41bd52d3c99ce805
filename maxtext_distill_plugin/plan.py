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

"""``maxtext-distill plan CONFIG.yml key=value ... compile_topology=v5p-8 [compile_topology_num_slices=N]``.

Compiles the run's distillation step (and the on-policy sampler) for a TPU topology on this machine, without a
TPU and without reading a checkpoint, and reports per device: the student's parameters and optimizer state, the
teacher's parameters, temporaries, the total against the chip's HBM, whether it fits, the largest
``per_device_batch_size`` that fits, FLOPs per step and the step-time floor they set, collectives per step, and
any ``[B, S, V]`` buffer. ``compile_topology=cpu-N`` compiles for N CPU devices of this host instead.

Options: ``--json FILE`` writes the report; ``--paths lean,dense,offline,sampler,floor`` picks programs (default:
what the run compiles, both loss paths online); ``--search PATHS`` (default: the run's path; ``none``) and
``--max-search-compiles N`` (6) bound the batch search; ``--hbm-gib X`` overrides the per-device memory;
``--hlo-dir DIR`` keeps each program's compiled HLO text.

Exit codes: 0 fits, 3 does not fit, 2 bad input (with the fix), as the trainer; 1 when a program failed to compile
for another reason than memory (the others are still reported).
"""

import os
import sys

EXIT_DOES_NOT_FIT = 3
_FLAGS = {"--json", "--paths", "--search", "--max-search-compiles", "--hbm-gib", "--hlo-dir"}


def _split(argv: list[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
  """``(run argv, planner flags, target keys)`` from ``[prog, CONFIG, key=value ..., --flag value ...]``."""
  from maxtext_distill_plugin import errors  # pylint: disable=import-outside-toplevel

  run, flags, target = [], {}, {}
  items = iter(argv)
  for item in items:
    if item.startswith("--"):
      name, sep, value = item.partition("=")
      if name not in _FLAGS:
        raise errors.ConfigError(name, value or None, f"use one of {sorted(_FLAGS)}.")
      flags[name] = value if sep else next(items, "")
    elif item.split("=")[0] in ("compile_topology", "compile_topology_num_slices"):
      key, _, value = item.partition("=")
      target[key] = value
    else:
      run.append(item)
  if not target.get("compile_topology"):
    raise errors.ConfigError(
        "compile_topology", None, "name the target, e.g. compile_topology=v5p-8 (or cpu-4 for this host's CPU)."
    )
  return run, flags, target


def _prepare_process(topology: str) -> None:
  """Compile-only: never probe for a TPU; a host target gets its forced CPU device count before JAX starts."""
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  # libtpu takes a host-wide lock meant for processes that drive TPU chips; compiling drives none, so several
  # planner runs (or a planner beside a test) may load it at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from maxtext_distill_plugin.planning import targets  # pylint: disable=import-outside-toplevel  # no JAX import

  count = targets.host_device_count(topology)
  if count is not None:
    if "jax" in sys.modules:
      return  # too late to change the device count: targets.mesh says so if it does not match
    flag = f"--xla_force_host_platform_device_count={count}"
    os.environ["XLA_FLAGS"] = " ".join(
        [f for f in os.environ.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f] + [flag]
    )


def _names(value: str | None) -> tuple[str, ...] | None:
  if value is None:
    return None
  return tuple(v for v in value.split(",") if v and v != "none")


def main(argv: list[str] | None = None) -> int:
  """Plans ``argv`` (``[prog, CONFIG, ...]``); returns the exit code."""
  argv = list(sys.argv if argv is None else argv)
  from maxtext_distill_plugin import errors  # pylint: disable=import-outside-toplevel

  try:
    run_argv, flags, target_keys = _split(argv)
  except errors.ConfigError as e:
    print(f"maxtext-distill plan: {e}", file=sys.stderr)
    return errors.EXIT_USAGE
  _prepare_process(target_keys["compile_topology"])
  from absl import logging  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin import _compat  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.planning import programs  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.planning import report  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.planning import runner  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.planning import targets  # pylint: disable=import-outside-toplevel

  _compat.ensure_absl_flags_parsed()
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  try:
    paths, search = _names(flags.get("--paths")), _names(flags.get("--search"))
    for name in (paths or ()) + (search or ()):
      if name not in programs.ALL_PATHS:
        raise errors.ConfigError("--paths/--search", name, f"use names from {list(programs.ALL_PATHS)}.")
    target = targets.parse(
        target_keys["compile_topology"],
        int(target_keys.get("compile_topology_num_slices", "1")),
        float(flags["--hbm-gib"]) if "--hbm-gib" in flags else None,
    )
    targets.require_compiler(target)
    request = runner.PlanRequest(
        tuple(run_argv), target, paths, search, int(flags.get("--max-search-compiles", "6")), flags.get("--hlo-dir")
    )
    _compat.check_host()
    result = runner.plan(request)
  except (errors.ConfigError, _compat.HostIncompatibleError, ValueError) as e:
    logging.error("%s", e)
    print(f"maxtext-distill plan: {e}", file=sys.stderr)
    return errors.EXIT_USAGE
  print(report.table(result))
  if flags.get("--json"):
    report.write_json(result, flags["--json"])
  failed = [path for path, found in result["paths"].items() if found.get("failed")]
  if failed:
    print(f"maxtext-distill plan: {', '.join(failed)} failed to compile (see the log); no verdict.", file=sys.stderr)
    return 1
  return 0 if result["fits"] else EXIT_DOES_NOT_FIT


if __name__ == "__main__":
  sys.exit(main())
