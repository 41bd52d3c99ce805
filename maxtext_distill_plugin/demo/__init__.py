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

"""The README's main job: prune a pre-trained MaxText model and recover it by distillation, on a CPU.

  python -m maxtext_distill_plugin.demo [--output-dir demo_output] [--fast]

Nothing is downloaded; every stage uses MaxText's own machinery where it has one.

1. Data: the standard library's Python sources, a 1k-piece SentencePiece
   tokenizer trained on them, and pre-tokenized ArrayRecord files for MaxText's
   Grain pipeline; a stable hash of each path picks the held-out files
   (:mod:`.data`, :mod:`.records`).
2. Teacher: ``configs/demo-model.yml`` (4 layers, width 128) pre-trained by
   MaxText's own ``maxtext.trainers.pre_train.train`` in a subprocess; reused
   on the next run when its data and settings have not changed.
3. Student: the teacher cut to layers ``KEEP_LAYERS`` (:mod:`maxtext_distill_plugin.student.pruning`).
4. Held-out cross-entropy of the teacher and the pruned student.
5. Online distillation with the spec's same-size pruning-recovery recipe,
   ``configs/demo-pruning-recovery.yml``, through :mod:`maxtext_distill_plugin.training.trainer`.
6. Held-out cross-entropy of the distilled student, then a table.

Every model is scored by the same code on the same batches: the first
``eval_steps`` batches of MaxText's eval iterator over the held-out split,
collected once. A unigram model of the training split's token counts scores
the same targets, as the floor any language model must beat.

Modules, in the order a run uses them: :mod:`.plan` (fixed choices, work per stage, output paths), :mod:`.data` and
:mod:`.records` (corpus, tokenizer, ArrayRecord files), :mod:`.teacher` (MaxText pre-training, reused when
unchanged), :mod:`.scoring` (held-out batches and scores, shared with ``tools/study_pruning_recovery.py``),
:mod:`.pipeline` (the stages), :mod:`.report` (the table), :mod:`.cli` (the command line, ``__main__``).
"""
