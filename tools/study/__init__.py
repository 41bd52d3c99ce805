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

"""Pruning-recovery study: SFT against the spec's distillation recipes, on held-out real text, on a CPU.

  .venv/bin/python tools/study_pruning_recovery.py [--output-dir demo_output] [--quick]

Built on the demo (:mod:`maxtext_distill_plugin.demo`): its standard-library
corpus and held-out split, its MaxText-pretrained 4-layer teacher (reused when
``<output-dir>/teacher`` matches) and its 2-layer pruned student (layers
``maxtext_distill_plugin.demo.plan.KEEP_LAYERS``). From that one student, with the same data, steps, batch,
optimizer and seeds, it trains

  (a) SFT only (``configs/study-sft.yml``: alpha 0, beta 0);
  (b) logit KD with the spec's recovery schedules (``configs/study-logit-kd.yml``: alpha 0.9 -> 0.5, T 2 -> 1);
  (c) (b) plus the feature loss on the layers around the pruned region (``configs/study-pruning-recovery.yml``);
  (d) (b) from a cache of the teacher's top-k, written once per seed by ``save_top_k_teacher_logits``;
  (e) upstream MaxText's own ``train_distill`` on (b)'s YAML, where it runs at all;
  and ablations of (c) in the spec's priority order, as CLI overrides, while the time budget lasts;
  ``--arms`` picks other arms instead of (a)-(d), e.g. (b) with another divergence at T:
  ``--arms kd_forward_kl,kd_reverse_kl,kd_jsd,kd_skew_kl`` (see :mod:`tools.study.arms`),

then scores every checkpoint on the same held-out batches with the demo's scoring
(:mod:`maxtext_distill_plugin.demo.scoring`: CE, perplexity, KL at T=1 to the
teacher, top-1 agreement with the teacher; and the fraction of the
pruned-to-teacher CE gap recovered) and writes ``<output-dir>/study/results.json``,
``results.md`` and learning-curve PNGs (from each run's ``metrics_file``). ``docs/results.md`` is the
reading of one such run (``--plots-dir docs``).

Resumable: a finished run leaves ``result.json`` beside its checkpoints and is
skipped on the next invocation when its arguments and teacher are unchanged.

Modules: :mod:`arms` (the recipes), :mod:`inputs` (plan, data, teacher, pruned
student, caches, each arm's arguments), :mod:`runner` (training, scoring,
outputs), :mod:`upstream` (upstream's trainer), :mod:`report` (summary and
table), :mod:`plots` (learning curves), :mod:`cli` (the command line).
"""
