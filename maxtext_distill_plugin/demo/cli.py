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

"""``python -m maxtext_distill_plugin.demo``: its flags, quiet host logs, the run and the printed table."""

import argparse
import logging as std_logging
import os
import sys
import time
import warnings

from absl import logging

import maxtext_distill_plugin
from maxtext_distill_plugin import demo
from maxtext_distill_plugin.demo import pipeline
from maxtext_distill_plugin.demo import plan as plan_lib
from maxtext_distill_plugin.demo import report

# The plugin's own records are those of any module of the package (the demo's included).
_PLUGIN_DIR = os.path.dirname(os.path.abspath(maxtext_distill_plugin.__file__)) + os.sep


class _PluginRecordsOnly(std_logging.Filter):
  """Lets through the plugin's own INFO lines (progress, evals) and anyone's errors; hides the hosts' chatter."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.ERROR or os.path.abspath(record.pathname).startswith(_PLUGIN_DIR)


def _quiet_host_logs() -> None:
  logging.set_verbosity(logging.INFO)
  logging.get_absl_logger().addFilter(_PluginRecordsOnly())
  warnings.filterwarnings("ignore", module=r"orbax\..*")


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m maxtext_distill_plugin.demo", description=demo.__doc__.split("\n", maxsplit=1)[0]
  )
  parser.add_argument("--output-dir", default="demo_output", help="where every artifact goes (default: demo_output)")
  parser.add_argument("--fast", action="store_true", help="a few steps of each stage on a small corpus (smoke test)")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  _quiet_host_logs()
  started = time.perf_counter()
  results = pipeline.run(args.output_dir, plan_lib.FAST if args.fast else plan_lib.FULL)
  print(report.format_report(results))
  print(f"Total: {time.perf_counter() - started:.0f}s. Numbers: {os.path.abspath(args.output_dir)}/results.json")
  return 0
