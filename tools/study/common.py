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

"""What the studies share: picking arms by name, the trainer arguments of one run, quiet logging, and the
bars-and-seeds chart.

Each study (``on_policy_study``, ``runner`` over ``inputs``, ``arithmetic_study``) keeps its own arms, plan and
scores; this module is the plumbing they have in common, so a change to it reaches all three.
"""

import logging as std_logging
import os
import warnings

from absl import logging

import maxtext_distill_plugin

_STUDY_DIR = os.path.dirname(os.path.abspath(__file__))
_OWN_FILES = (
    os.path.dirname(os.path.abspath(maxtext_distill_plugin.__file__)) + os.sep,
    _STUDY_DIR + os.sep,
    os.path.join(os.path.dirname(_STUDY_DIR), "study_pruning_recovery.py"),
)


def select(names: str, by_name: dict) -> tuple:
  """The values of ``by_name`` for a comma-separated list of names (``--arms``), in the order given.

  Raises:
    ValueError: an unknown or repeated name; the message lists the names there are.
  """
  chosen = [n.strip() for n in names.split(",") if n.strip()]
  unknown = [n for n in chosen if n not in by_name]
  if unknown or not chosen or len(set(chosen)) != len(chosen):
    problem = f"unknown arm(s) {', '.join(unknown)}" if unknown else "an empty or repeated arm list"
    raise ValueError(
        f"--arms={names!r}: {problem}. Fix: a comma-separated list of distinct arms from {', '.join(by_name)}."
    )
  return tuple(by_name[n] for n in chosen)


def check_arms_flag(parser, value: str | None, select_arms) -> None:
  """``--arms`` checked by ``select_arms`` before anything is built: a bad list is ``parser.error`` (exit 2)."""
  if value is None:
    return
  try:
    select_arms(value)
  except ValueError as e:
    parser.error(str(e))


def run_argv(yaml: str, run_dir: str, *, steps: int, seed: int, student_items: str, teacher_items: str) -> list[str]:
  """The ``config.build`` arguments every study run starts with: its YAML, where it writes, its length and seed,
  the metrics file the study reads back, and the student and teacher it starts from. A study appends its own."""
  # Imported here so that the arm tables, which import this module, stay free of MaxText's import cost.
  from maxtext_distill_plugin.configuration import config as config_lib  # pylint: disable=import-outside-toplevel

  return [
      "study",
      config_lib.resolve_yaml(yaml),
      f"run_name={os.path.basename(run_dir)}",
      f"base_output_directory={os.path.dirname(run_dir)}",
      f"steps={steps}",
      f"data_shuffle_seed={seed}",
      f"metrics_file={os.path.join(run_dir, 'metrics.jsonl')}",
      f"student_overrides.load_parameters_path={student_items}",
      f"teacher_overrides.load_parameters_path={teacher_items}",
  ]


class _OwnRecordsOnly(std_logging.Filter):
  """INFO lines of the studies and the plugin, and anyone's errors; not the hosts' chatter."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.ERROR or os.path.abspath(record.pathname).startswith(_OWN_FILES)


def quiet_logging() -> None:
  """CPU JAX unless told otherwise; INFO from our own files only; Orbax's warnings off (one per checkpoint)."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_logger().addFilter(_OwnRecordsOnly())
  warnings.filterwarnings("ignore", module=r"orbax\..*")


def pyplot():
  """matplotlib's ``pyplot`` on the file-only backend, or None where matplotlib is not installed (no PNG then)."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return plt


def seed_bars(ax, results: dict, value_of, *, arm_mean, references=("teacher", "pruned")) -> None:
  """One panel: each arm's mean as a bar, its seeds as dots, and the reference models as horizontal lines.

  Args:
    ax: the matplotlib axes.
    results: a study's results (``arms``, ``runs``, ``reference``).
    value_of: a run's or a reference model's value, from its score dict.
    arm_mean: an arm's mean, from its summary.
    references: the ``results["reference"]`` entries drawn as lines (teacher green dashed, pruned red dotted).
  """
  names = list(results["arms"])
  ax.bar(range(len(names)), [arm_mean(results["arms"][n]) for n in names], color="#9ecae1")
  for i, name in enumerate(names):
    values = [value_of(r["scores"]) for r in results["runs"] if r["arm"] == name]
    ax.plot([i] * len(values), values, "k.", markersize=6)
  for ref, color, style in zip(references, ("g", "r"), ("--", ":")):
    ax.axhline(value_of(results["reference"][ref]), linestyle=style, color=color, label=ref)
  ax.set_xticks(range(len(names)), names, rotation=20)


def save_figure(plt, fig, plots_dir: str, filename: str) -> str:
  """Writes ``fig`` as ``plots_dir/filename`` and closes it; returns the path."""
  fig.tight_layout()
  os.makedirs(plots_dir, exist_ok=True)
  path = os.path.join(plots_dir, filename)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
