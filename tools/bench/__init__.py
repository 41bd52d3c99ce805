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

"""Lean and fast: our online distillation step against upstream MaxText's and against the floor.

    python tools/bench_distill.py --out docs/benchmarks.md [--quick]

For each shape (vocabulary x sequence length; tiny widths so it runs on a
laptop CPU) one YAML is written and one teacher checkpoint is made with
MaxText's own pre-training. Four variants then run on that same YAML, each in
its own process (so peak RSS is its own):

  ours_dense    the plugin's compiled step, ``distill_loss_impl=dense``
  ours_chunked  the plugin's compiled step, ``distill_loss_impl=chunked``
  upstream      MaxText 0.2.5's own train step as its Tunix trainer compiles it
                (through ``tools/upstream_compat.py``, a benchmark-only shim)
  floor         MaxText's own pre-training ``train_step`` for the student plus a
                teacher forward pass, in one jitted function: what any online
                distillation must at least do

Each worker builds its step, compiles it ahead of time (recording the compiled
program's ``memory_analysis()``), runs one warm-up step and waits. The parent
then runs rounds; in each round every variant, in a rotating order, runs a few
steps while the others sleep, so machine load falls on all variants alike.
Reported: median step times, per-round paired time ratios, XLA's temporary
memory of each compiled step and each process's peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss`` at exit), as a Markdown report and a plot
of temp memory against vocabulary size.

The parent imports neither JAX nor MaxText; ``--worker`` is the internal
entry of the worker processes.

Modules: :mod:`shapes` (shapes, teacher, shared YAML), :mod:`workers` (one
variant's compiled step, in its own process), :mod:`runner` (the parent:
workers, interleaved rounds), :mod:`tables` (ratios, tables, verdicts),
:mod:`report` (the Markdown report and the plot), :mod:`cli` (the command line).
"""
