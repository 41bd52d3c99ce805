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

"""The study's learning-curve PNGs, from the trainer's held-out evals in each run's ``metrics_file``."""

import os

from absl import logging
import numpy as np

from tools.study import arms as arms_lib

_CE = ("eval_ce", "ce", "held-out CE (nats)")
_KL = ("eval_kl_t1", "kl_t1", "held-out KL(teacher || student), T=1")
# (file, title, arms, panels, seeds, optional); a panel is (curve key, reference key, y label, baseline arm or None);
# seeds "all" or "first"; an optional figure is drawn only when one of its arms ran.
FIGURES = (
    (
        "study-curves.png",
        "main arms (mean over seeds; band: min to max)",
        arms_lib.MAIN_ARMS,
        (_CE + (None,), _KL + (None,), ("eval_ce", "ce", "held-out CE minus SFT's (same seed)", arms_lib.SFT)),
        "all",
        False,
    ),
    (
        "study-ablation.png",
        "ablations of (c), first seed, as differences from (c)",
        arms_lib.ABLATIONS,
        (
            ("eval_ce", "ce", "held-out CE minus (c)'s", arms_lib.RECIPE),
            ("eval_kl_t1", "kl_t1", "KL(T=1) minus (c)'s", arms_lib.RECIPE),
        ),
        "first",
        False,
    ),
    (
        "study-divergences.png",
        "divergences of (b) (mean over seeds; band: min to max)",
        arms_lib.DIVERGENCE_ARMS,
        (
            _CE + (None,),
            _KL + (None,),
            ("eval_ce", "ce", "held-out CE minus forward KL's (same seed)", arms_lib.KD_FORWARD_KL),
        ),
        "all",
        True,
    ),
)


def plot_curves(results: dict, out_dir: str) -> list[str]:
  """PNG learning curves from the trainer's held-out evals; [] when matplotlib is missing."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("matplotlib is not installed: no plots (pip install matplotlib).")
    return []
  os.makedirs(out_dir, exist_ok=True)
  written = []
  ran = {r["arm"] for r in results["runs"]}
  for filename, title, arms, panels, which_seeds, optional in FIGURES:
    if optional and not ran & {arm.name for arm in arms}:
      continue
    seeds = results["plan"]["seeds"] if which_seeds == "all" else results["plan"]["seeds"][:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.5), dpi=100)
    for ax, (key, ref_key, ylabel, baseline) in zip(axes, panels):
      for index, arm in enumerate(arms):
        _plot_arm(ax, results, arm, (key, ref_key, baseline), seeds, color=f"C{index}")
      references = (("teacher", ":"), ("pruned", "--")) if baseline is None else ()
      for name, style in references:
        ax.axhline(results["reference"][name][ref_key], color="black", linestyle=style, linewidth=1, label=name)
      if baseline is not None:
        ax.axhline(0.0, color="black", linewidth=1, label=baseline.label)
      ax.set(xlabel="optimizer step", ylabel=ylabel)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    fig.suptitle(f"Pruning recovery, {title}")
    fig.tight_layout()
    written.append(os.path.join(out_dir, filename))
    fig.savefig(written[-1])
    plt.close(fig)
  return written


def _values(results: dict, run: dict, key: str, ref_key: str) -> list[float]:
  return [results["reference"]["pruned"][ref_key]] + run["curve"][key]


def _plot_arm(ax, results: dict, arm: arms_lib.Arm, panel: tuple, seeds, color: str) -> None:
  """One arm's mean curve (step 0: the pruned student), minus ``baseline``'s on the same seed, band over seeds."""
  key, ref_key, baseline = panel
  # A panel shows the runs that logged its metric at every eval (offline runs log no in-loop KL).
  runs = {
      r["seed"]: r
      for r in results["runs"]
      if r["arm"] == arm.name and r["seed"] in seeds and len(r["curve"][key]) == len(r["curve"]["eval_step"])
  }
  bases = {r["seed"]: r for r in results["runs"] if baseline is not None and r["arm"] == baseline.name}
  rows = []
  for seed, run in sorted(runs.items()):
    if baseline is None:
      rows.append(_values(results, run, key, ref_key))
    elif seed in bases and arm is not baseline:
      rows.append(np.subtract(_values(results, run, key, ref_key), _values(results, bases[seed], key, ref_key)))
  if not rows:
    return
  steps, values = [0] + next(iter(runs.values()))["curve"]["eval_step"], np.array(rows)
  ax.plot(steps, values.mean(axis=0), marker=".", color=color, label=arm.label)
  if len(rows) > 1:
    ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2)
