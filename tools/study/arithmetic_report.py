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

"""The addition study's summary (mean and sample standard deviation over seeds, fraction of the teacher-student
exact-match gap closed), its Markdown table and its PNG (exact match against the step, and per-seed finals)."""

import statistics

from tools.study import arithmetic_arms
from tools.study import common

SCORES = ("exact_match", "teacher_nll", "ce", "completion_length")


def gap_closed(value: float, pruned: float, teacher: float) -> float:
  """``(value - pruned) / (teacher - pruned)``: 0 is the untrained student, 1 the teacher."""
  return (value - pruned) / (teacher - pruned) if teacher != pruned else float("nan")


def _mean_std(values: list[float]) -> dict:
  return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(runs: list[dict], reference: dict) -> dict:
  """Per arm: mean and sample standard deviation over its seeds of every score, the gap closed and the wall time."""
  low, high = reference["pruned"]["exact_match"], reference["teacher"]["exact_match"]
  out = {}
  for name in dict.fromkeys(r["arm"] for r in runs):
    mine = [r for r in runs if r["arm"] == name]
    out[name] = {key: _mean_std([r["scores"][key] for r in mine]) for key in SCORES}
    out[name]["gap_closed"] = _mean_std([gap_closed(r["scores"]["exact_match"], low, high) for r in mine])
    out[name]["train_seconds"] = _mean_std([r["train_seconds"] for r in mine])
    out[name]["sampled_steps"] = _mean_std([float(r["sampled_steps"]) for r in mine])
    out[name]["seeds"] = len(mine)
  return out


def markdown_report(results: dict) -> str:
  """The table: references, then every arm's mean ± std over seeds."""
  plan = results["plan"]
  lines = [
      (
          f"{plan['digits']}-digit addition, {results['eval_prompts']} held-out problems; {plan['steps']} optimizer"
          f" steps of batch {plan['batch']} per run, seeds {plan['seeds']}."
      ),
      "",
      (
          "| model | seeds | greedy exact match | gap closed | teacher NLL of greedy answers | held-out CE |"
          " answer tokens | sampled steps | train s |"
      ),
      "|---|---|---|---|---|---|---|---|---|",
  ]

  def cell(v, digits=4):
    return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}" if isinstance(v, dict) else f"{v:.{digits}f}"

  for name, key in (("teacher", "teacher"), ("untrained pruned student", "pruned")):
    s = results["reference"][key]
    lines.append(
        f"| {name} | - | {cell(s['exact_match'])} | {1.0 if key == 'teacher' else 0.0:.2f} | {cell(s['teacher_nll'])}"
        f" | {cell(s['ce'])} | {cell(s['completion_length'], 2)} | - | - |"
    )
  for name, s in results["arms"].items():
    lines.append(
        f"| {arithmetic_arms.BY_NAME[name].label} | {s['seeds']} | {cell(s['exact_match'])} | {cell(s['gap_closed'], 2)}"
        f" | {cell(s['teacher_nll'])} | {cell(s['ce'])} | {cell(s['completion_length'], 2)}"
        f" | {s['sampled_steps']['mean']:.0f} | {s['train_seconds']['mean']:.0f} |"
    )
  return "\n".join(lines)


def plot(results: dict, plots_dir: str) -> list[str]:
  """One PNG: held-out exact match against the step (mean over seeds) and each arm's final per seed."""
  plt = common.pyplot()
  if plt is None:
    return []
  fig, (curves, finals) = plt.subplots(1, 2, figsize=(11, 4))
  for name in results["arms"]:
    mine = [r["curve"] for r in results["runs"] if r["arm"] == name]
    steps = mine[0]["step"]
    mean = [statistics.fmean(c["exact_match"][i] for c in mine) for i in range(len(steps))]
    curves.plot(steps, mean, marker="o", label=name)
  for ref, color, style in (("teacher", "g", "--"), ("pruned", "r", ":")):
    curves.axhline(results["reference"][ref]["exact_match"], linestyle=style, color=color, label=ref)
  curves.set_xlabel("optimizer step")
  curves.set_ylabel("held-out greedy exact match")
  curves.legend(fontsize=7)
  common.seed_bars(finals, results, lambda scores: scores["exact_match"], arm_mean=lambda arm: arm["exact_match"]["mean"])
  finals.set_title("final exact match (bars: mean; dots: seeds)")
  return [common.save_figure(plt, fig, plots_dir, "onpolicy_arithmetic.png")]
