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

"""Command line: ``maxtext-distill``, ``python -m maxtext_distill_plugin`` and the spec's module name.

train_distill <config.yml> [key=value ...]     train (online, or offline with offline_data_dir)
train_distill <config.yml> [key=value ...] --dry-run
                                               build and check the three configs, print the plan, exit
train_distill --list                           the configs shipped with the plugin (usable by name)
maxtext-distill plan <config.yml> [key=value ...] compile_topology=v5p-8
                                               compile the run's step for a topology: will it fit? (plan.py)
"""

import os
import sys

from absl import logging

from maxtext_distill_plugin import _compat
from maxtext_distill_plugin import errors


def _setup_logging() -> None:
  _compat.ensure_absl_flags_parsed()
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)


def maybe_initialize_distributed() -> None:
  """Multi-process runs on plain hosts (CPU clusters, tests): set JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID and the processes join before any config is built.
  """
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address or int(os.environ.get("JAX_NUM_PROCESSES", "1")) <= 1:
    return
  import jax  # pylint: disable=import-outside-toplevel

  if jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=address,
      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
      process_id=int(os.environ["JAX_PROCESS_ID"]),
  )
  logging.info("joined %d JAX processes as process %d", jax.process_count(), jax.process_index())


def banner() -> str:
  return (
      f"maxtext-distill {_compat.plugin_version()} is the trainer (host MaxText {_compat.maxtext_version()});"
      " set MAXTEXT_DISTILL_USE_UPSTREAM=1 to run MaxText's own module instead."
  )


def _run_upstream(argv: list[str]) -> None:
  import runpy  # pylint: disable=import-outside-toplevel

  import _maxtext_distill_hook as _host_hook  # pylint: disable=import-outside-toplevel

  os.environ[_host_hook.UPSTREAM_SWITCH] = "1"
  sys.argv = argv
  runpy.run_module(_host_hook.DOCUMENTED_MODULE, run_name="__main__", alter_sys=True)


def describe(configs) -> str:
  s, t, d = configs.student, configs.teacher, configs.settings
  caches = configs.global_config.offline_data_dir or ", ".join(path for _, path in configs.caches)
  lines = [
      f"mode: {'offline (cache ' + caches + ')' if configs.offline else 'online'}",
      (
          f"student: model={s.model_name} layers={s.num_decoder_layers} emb={s.emb_dim} vocab={s.vocab_size}"
          f" load_parameters_path={s.load_parameters_path or '(fresh init)'}"
      ),
  ]
  if t is not None:
    lines.append(
        f"teacher: model={t.model_name} layers={t.num_decoder_layers} emb={t.emb_dim} vocab={t.vocab_size}"
        f" load_parameters_path={t.load_parameters_path}"
    )
  lines.append(
      f"loss: alpha={d.distill_alpha}->{d.distill_alpha_end} ({d.distill_alpha_schedule})"
      f" T={d.distill_temperature}->{d.distill_temperature_end} ({d.distill_temperature_schedule})"
      f" beta={d.distill_beta}->{d.distill_beta_end} ({d.distill_beta_schedule}) features={d.extract_features}"
  )
  lines.append(
      f"run: steps={s.steps} per_device_batch_size={s.per_device_batch_size} seq={s.max_target_length}"
      f" grad_accum={s.gradient_accumulation_steps} output={s.base_output_directory}/{s.run_name}"
  )
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) > 1 and argv[1] == "plan":  # the planner sets up its own process (no TPU probe, CPU devices)
    from maxtext_distill_plugin import plan  # pylint: disable=import-outside-toplevel

    sys.exit(plan.main([argv[0]] + argv[2:]))
  import _maxtext_distill_hook as _host_hook  # pylint: disable=import-outside-toplevel

  if _host_hook.use_upstream():
    _run_upstream(argv)
    return
  if "--list" in argv:
    from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

    print("\n".join(config.shipped_configs()))
    return
  _setup_logging()
  dry_run = "--dry-run" in argv
  argv = [a for a in argv if a != "--dry-run"]
  logging.info(banner())
  maybe_initialize_distributed()
  try:
    _compat.check_host()
    from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

    configs = config.build(argv)
  except (errors.ConfigError, _compat.HostIncompatibleError, ValueError) as e:  # pydantic errors are ValueErrors
    logging.error("%s", e)
    print(f"maxtext-distill: {e}", file=sys.stderr)
    sys.exit(errors.EXIT_USAGE)
  logging.info("plan:\n%s", describe(configs))
  if dry_run:
    print(describe(configs))
    return
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

  sys.exit(trainer.run(configs))


if __name__ == "__main__":
  main()
