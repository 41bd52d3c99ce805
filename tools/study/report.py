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

"""The study's summary: per-arm means and spreads over seeds, paired same-seed differences, the Markdown table."""

import math

import numpy as np

from tools.study import arms as arms_lib


def stats(values: list[float]) -> dict:
  values = np.asarray(values, np.float64)
  spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return {"mean": float(values.mean()), "std": spread, "min": float(values.min()), "max": float(values.max())}


def summarize(runs: list[dict], reference: dict[str, dict]) -> dict[str, dict]:
  """Per arm: the mean and sample standard deviation over seeds of each score, and of the gap recovered."""
  gap = reference["pruned"]["ce"] - reference["teacher"]["ce"]
  arms = {}
  for arm in arms_lib.ALL_ARMS:
    mine = [r for r in runs if r["arm"] == arm.name]
    if not mine:
      continue
    scores = {k: stats([r["scores"][k] for r in mine]) for k in ("ce", "perplexity", "kl_t1", "top1_agreement")}
    recovered = [(reference["pruned"]["ce"] - r["scores"]["ce"]) / gap for r in mine]
    scores["gap_recovered"] = stats(recovered)
    scores["train_seconds"] = stats([r["train_seconds"] for r in mine])
    arms[arm.name] = {"label": arm.label, "seeds": [r["seed"] for r in mine], **scores}
  return arms


def paired_differences(runs: list[dict]) -> dict[str, dict]:
  """Held-out CE differences between two arms trained on the same seed (same data order), over seeds."""
  by_key = {(r["arm"], r["seed"]): r["scores"]["ce"] for r in runs}
  out = {}
  for left, right in arms_lib.PAIRS:
    seeds = [s for (a, s) in by_key if a == left.name and (right.name, s) in by_key]
    diffs = [by_key[(left.name, s)] - by_key[(right.name, s)] for s in seeds]
    if diffs:
      out[f"{left.name} - {right.name}"] = {**stats(diffs), "n": len(diffs)}
  return out


def _pm(stat: dict, fmt: str) -> str:
  return f"{stat['mean']:{fmt}} ± {stat['std']:{fmt}}" if stat["std"] > 0 else f"{stat['mean']:{fmt}}"


def markdown_table(results: dict) -> str:
  """The results as a Markdown table (mean ± sample std over seeds where there are several)."""
  ref, arms = results["reference"], results["arms"]
  head = "| model | seeds | held-out CE | perplexity | KL(T=1) to teacher | top-1 agreement | gap recovered |"
  lines = [
      head,
      "|---|---|---|---|---|---|---|",
      (
          f"| unigram (training-split counts) | - | {ref['unigram']['ce']:.4f} |"
          f" {math.exp(ref['unigram']['ce']):.1f} | - | - | - |"
      ),
  ]
  for name, label in (("teacher", "teacher, 4 layers"), ("pruned", "pruned student, 2 layers, before")):
    s = ref[name]
    recovered = "100%" if name == "teacher" else "0%"
    lines.append(
        f"| {label} | - | {s['ce']:.4f} | {s['perplexity']:.2f} | {s['kl_t1']:.4f} |"
        f" {100 * s['top1_agreement']:.1f}% | {recovered} |"
    )
  for a in arms.values():
    agree = {k: 100 * v for k, v in a["top1_agreement"].items()}
    gap = {k: 100 * v for k, v in a["gap_recovered"].items()}
    lines.append(
        f"| {a['label']} | {len(a['seeds'])} | {_pm(a['ce'], '.4f')} | {_pm(a['perplexity'], '.2f')} |"
        f" {_pm(a['kl_t1'], '.4f')} | {_pm(agree, '.1f')}% | {_pm(gap, '.1f')}% |"
    )
  return "\n".join(lines)


def _paired(diff: dict) -> str:
  if diff["n"] == 1:
    return f"{diff['mean']:+.4f} nats (one seed)"
  return f"{diff['mean']:+.4f} ± {diff['std']:.4f} nats (n={diff['n']}, range {diff['min']:+.4f} .. {diff['max']:+.4f})"


def markdown_report(results: dict) -> str:
  plan = results["plan"]
  up = results.get("upstream") or {"status": "not attempted", "error": ""}
  paired = [f"- {k}: {_paired(v)}" for k, v in results["paired_ce_differences"].items()]
  return "\n".join([
      (
          f"Held-out: {results['eval_tokens']} target tokens ({plan['demo_plan']['eval_batches']} batches) of"
          f" {results['eval_files']} standard-library files never trained on. {plan['steps']} steps per run,"
          f" seeds {list(plan['seeds'])} (data order)."
      ),
      "",
      markdown_table(results),
      "",
      "Paired held-out CE differences (same seed, negative = left arm better):",
      *paired,
      "",
      f"Upstream train_distill on recipe (b): {up['status']}. {up['error']}",
      "Wall-clock seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["stage_seconds"].items()),
      f"Total {results['seconds']:.0f}s.",
  ])
