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

"""The benchmark's Markdown report: context, targets, the analysis in this run's numbers, the tables, the plot."""

import pathlib

from absl import logging

from maxtext_distill_plugin.training import step as step_lib
from tools.bench import shapes
from tools.bench import tables


def _bsv_mib(shape: dict) -> float:
  return shape["batch"] * shape["seq"] * shape["vocab"] * 4 / shapes.MIB


def _range(values: list[float]) -> str:
  return "n/a" if not values else f"{min(values):.2f}x" if len(values) == 1 else f"{min(values):.2f}-{max(values):.2f}x"


def _span(rows: list[dict], numerator: str, denominator: str) -> str:
  return _range([p[0] for p in (tables.paired_ratio(r, numerator, denominator) for r in rows) if p])


def _span_sentence(rows: list[dict]) -> str:
  large = [r for r in rows if r["shape"]["vocab"] >= 32768]
  if not large:
    return ""
  return (
      f" At vocab >= 32k, chunked took {_span(large, 'ours_chunked', 'floor')} the floor's time and"
      f" {_span(large, 'ours_chunked', 'upstream')} upstream's; dense took {_span(large, 'ours_dense', 'floor')} the"
      " floor's. Its logit gradient combines six `[B, S, V]` arrays (both models' softmaxes at T and at 1, the"
      " scatter of the CE gather, the mask), and XLA writes it transposed for the head's weight-gradient matmul:"
      " one cache-hostile pass that the floor makes over fewer inputs."
  )


def analysis_lines(rows: list[dict]) -> list[str]:
  """The 'why' behind the tables, with this run's numbers."""
  if not rows:
    return []
  row = ([r for r in rows if tables.is_anchor(r)] or [max(rows, key=lambda r: _bsv_mib(r["shape"]))])[0]
  shape, bsv = row["shape"], _bsv_mib(row["shape"])
  units = {v: tables.fmt(tables.ratio(tables.mib(row, v), bsv), ".1f") for v in shapes.VARIANTS}
  tile = shape["batch"] * min(128, shape["seq"]) * shape["vocab"] * 4 / shapes.MIB
  lines = [
      (
          f"- **Memory.** At vocab {shape['vocab']}, seq {shape['seq']}, in units of one float32 `[B, S, V]` array"
          f" ({bsv:.3g} MiB), the compiled temp memory is: upstream {units['upstream']}, ours dense"
          f" {units['ours_dense']}, floor {units['floor']}, ours chunked {units['ours_chunked']}. Upstream's strategy"
          " keeps the student's and the teacher's logits, the student's log-softmax at T and at 1, the teacher's"
          " probabilities at T and at 1 and one-hot labels, all `[B, S, V]` float32, plus their gradients; our dense"
          " path keeps log-probabilities instead of one-hots and probabilities, so fewer arrays of the same kind. The"
          " floor (MaxText's own CE) keeps the logits, a one-hot and the gradient. The chunked path allocates no `[B, S,"
          f" V]` array at all: its vocabulary-sized buffers are `[B, distill_seq_chunk=128, V]` tiles ({tile:.3g} MiB"
          f" here; its whole temp is {tables.fmt(tables.ratio(tables.mib(row, 'ours_chunked'), tile), '.0f')} tiles'"
          " worth, the two models' activations included). Its memory therefore grows with V at 128/S of the dense slope,"
          " and the gap to upstream grows with V; `distill_vocab_chunk` would shrink the tiles further."
      ),
      "- **Time.** All four variants run the same decoder layers, so the differences come from the output head and"
      " the loss. Upstream, ours dense and the floor run the `[B, S, D] x [D, V]` head matmul 4 times per step"
      " (teacher forward, student forward, two gradient matmuls); ours chunked runs it 6 times (its backward"
      " recomputes both models' logits tile by tile) but never writes or re-reads a `[B, S, V]` array. The dense"
      " variants make many passes over such arrays in memory (4 log-softmaxes, 2 KL terms, CE gathers, the softmax"
      f" gradients; MaxText's CE in the floor: softmax, one-hot, gradient). With emb {shape['emb']} a logit costs few"
      " FLOPs, so"
      " on this CPU the memory passes weigh more than the extra matmuls once `[B, S, V]` outgrows the caches."
      + _span_sentence(rows),
  ]
  unreachable = [r for r in rows if ((tables.paired_ratio(r, "floor", "upstream") or [0])[0]) > tables.TIME_VS_UPSTREAM]
  if unreachable:
    where = " and ".join(f"{r['shape']['vocab']}/{r['shape']['seq']}" for r in unreachable)
    lines.append(
        f"- At vocab/seq {where} the floor itself takes more than {tables.TIME_VS_UPSTREAM}x upstream's time: the loss is"
        " a small share of the step at this vocabulary (the decoder layers dominate), so no loss implementation can"
        f" reach {tables.TIME_VS_UPSTREAM}x there."
    )
  return lines + _auto_lines(rows)


def _auto_lines(rows: list[dict]) -> list[str]:
  """Where the plugin's default (``auto``) picks dense although chunked measured faster and leaner."""
  picked = [r for r in rows if not tables.auto_picks_chunked(r["shape"])]
  time = [(tables.paired_ratio(r, "ours_chunked", "ours_dense") or [None])[0] for r in picked]
  temp = [tables.ratio(tables.mib(r, "ours_chunked"), tables.mib(r, "ours_dense")) for r in picked]
  if not picked or None in time or None in temp or max(time) >= 1:
    return []
  where = ", ".join(f"{r['shape']['vocab']}/{r['shape']['seq']}" for r in picked)
  return [
      f"- **Default.** `distill_loss_impl=auto` picks dense below {step_lib.AUTO_CHUNKED_MIN_LOGITS / 2**20:g} Mi"
      f" student logits per micro-batch, so at vocab/seq {where}; yet chunked took {_range(time)} dense's time and"
      f" {_range(temp)} its temp memory there. The targets above are met by `distill_loss_impl=chunked`, not by the"
      " default."
  ]


def _setup_minutes(rows: list[dict]) -> float:
  return sum(max((row[v].get("start_to_ready_s") or 0) for v in shapes.VARIANTS) for row in rows) / 60


def _context_lines(report: dict) -> list[str]:
  env, plan = report["environment"], report["plan"]
  shape = report["rows"][0]["shape"] if report["rows"] else {}
  versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
  load = ", ".join(f"{x:.1f}" for x in env.get("load_average_at_start", []))
  return [
      (
          f"Run {report['date']} on {env['cpu']} ({env['cores']} cores, {env['memory_gib']} GiB; load average {load} at"
          f" start; the machine is shared with other jobs), Python {env['python']}, {versions}. Total wall time"
          f" {report['wall_s'] / 60:.1f} min, of which {_setup_minutes(report['rows']):.1f} min starting workers"
          " (imports, model init, teacher restore, compile)."
      ),
      "",
      "## Setup",
      "",
      (
          f"- Models: MaxText's default decoder shrunk to emb {shape.get('emb')}, {shape.get('heads')} heads x"
          f" {shape.get('head_dim')}, MLP {shape.get('mlp')}, float32; teacher {shape.get('teacher_layers')} layers (a"
          f" checkpoint from one step of MaxText pre-training), student {shape.get('student_layers')} layer; per-device"
          f" batch {shape.get('batch')}; alpha 0.5, T 2.0, beta 0; synthetic data; one CPU device."
      ),
      (
          "- One YAML per shape (`configs/distillation-cpu-tiny.yml` resized; `enable_nnx` dropped because MaxText 0.2.5"
          " refuses it) is read by all four variants; only `distill_loss_impl` differs between ours."
      ),
      (
          "- **ours_dense / ours_chunked**: `step.make_train_step` after `train_utils.setup_train_loop`, jitted as"
          " `trainer.train` jits it (donated state, MaxText's state shardings)."
      ),
      (
          "- **upstream**: MaxText 0.2.5's `train_distill.main`, unchanged up to Tunix's loop; the step is the `nnx.jit`"
          " Tunix builds (`jit_train_and_eval_step`), called on a batch prepared as Tunix's loop prepares it."
          " `tools/upstream_compat.py` (benchmark-only) adds the `_checkpointer` attribute the released Tunix 0.1.7"
          " lacks and hands the compiled step over instead of entering Tunix's loop, which ignores `steps`. Tunix's"
          " per-step host work outside the step (metrics buffering, a host sync for its console line) is not timed."
      ),
      (
          "- **floor**: MaxText's own pre-training `train_step` (student forward, plain CE, backward, optimizer update)"
          " plus a teacher forward pass, in one `jax.jit`: the least an online distillation step must compute."
      ),
      (
          "- Timing: each variant in its own process, compiled ahead of time and warmed up by one step; then"
          f" {plan['rounds']} rounds in which every variant, in rotating order, runs about {plan['round_target_s']} s"
          " (at least one step) while the others sleep. Step times are medians over all timed steps; ratios are the"
          " median (and range) over rounds of the two variants' per-round medians, so load drifting between rounds"
          " cancels."
      ),
      (
          "- Memory: `compiled.memory_analysis().temp_size_in_bytes` of each compiled train step (XLA's scratch"
          " buffers: activations, logits, gradients in flight; not parameters, optimizer state or the batch), and"
          " each process's peak RSS (`ru_maxrss`: includes Python, JAX and MaxText imports and compilation)."
      ),
  ] + (
      [f"- **--quick** compiles with `XLA_FLAGS={plan['xla_flags']}` to save time: its timings mean nothing."]
      if plan.get("xla_flags")
      else []
  )


def _headroom_line(rows: list[dict]) -> list[str]:
  """The four processes of a shape live at once: the sum of their peak RSS bounds the RAM the run needs."""
  sums = [(sum(tables.mib(r, v, "maxrss_kib") or 0 for v in shapes.VARIANTS) / 1024, r["shape"]) for r in rows]
  if not sums:
    return []
  top, shape = max(sums, key=lambda x: x[0])
  return [
      f"- RAM: the four processes of a shape run side by side; their peak RSS sums to at most {top:.1f} GiB (vocab"
      f" {shape['vocab']}, seq {shape['seq']})."
  ]


def render_markdown(report: dict) -> str:
  rows = report["rows"]
  plot = f"![Compiled temp memory vs vocabulary]({report['plot_name']})" if report.get("plot_name") else ""
  lines = ['# Benchmarks: the online distillation step ("Lean and fast")', "", "Reproduce (repository root, `.venv`):"]
  lines += ["", "```bash", report["command"], "```", "", *_context_lines(report), *_headroom_line(rows), ""]
  lines += ["## Targets", "", *tables.target_lines(rows), "", "## Why", "", *analysis_lines(rows), ""]
  lines += ["## Step time (median s per step; ratios: median (range) over rounds)", "", *tables.time_table(rows), ""]
  lines += ["## Memory", "", *tables.memory_table(rows), "", plot, ""]
  lines += ["## Compile time and fastest step", "", *tables.setup_table(rows), ""]
  if tables.failures(rows):
    lines += ["## Failures", "", *tables.failures(rows), ""]
  return "\n".join(lines)


def write_plot(rows: list[dict], path: pathlib.Path) -> bool:
  """Compiled temp memory vs vocabulary size, one line per variant and sequence length."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("matplotlib is not installed: no plot written")
    return False
  fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
  colors = {"ours_dense": "tab:blue", "ours_chunked": "tab:green", "upstream": "tab:red", "floor": "tab:gray"}
  for seq, style in zip(sorted({r["shape"]["seq"] for r in rows}, reverse=True), ("-", "--", ":", "-.")):
    chosen = sorted((r for r in rows if r["shape"]["seq"] == seq), key=lambda r: r["shape"]["vocab"])
    for variant in shapes.VARIANTS:
      points = [(r["shape"]["vocab"], tables.mib(r, variant)) for r in chosen if tables.mib(r, variant) is not None]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, style, marker="o", color=colors[variant], label=f"{variant}, seq {seq}")
  ax.set_xscale("log", base=2)
  vocabs = sorted({r["shape"]["vocab"] for r in rows})
  ax.set_xticks(vocabs, [f"{v // 1024}k" if v >= 1024 else str(v) for v in vocabs])
  ax.set_yscale("log")
  ax.set_xlabel("vocabulary size")
  ax.set_ylabel("compiled temp memory of the train step (MiB)")
  ax.set_title("XLA temp memory per training step (lower is better)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return True
