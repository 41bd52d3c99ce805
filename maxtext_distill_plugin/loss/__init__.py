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

"""The distillation math: pure, jit-able functions over arrays, with no MaxText import.

``schedules`` and ``reductions`` (the (sum, count) pairs), ``losses`` (log-softmax, CE, feature distance),
``divergences`` (the family and its registry), ``objective`` and ``cached_objective`` (the objective on dense logits
and against a cached top-k), ``sparse_losses`` and ``sparse_tail`` (the top-k buckets and their tail),
``tiles`` and ``tile_vjp`` (the one custom-VJP tile skeleton), ``online_tiles``, ``chunked_objective`` and
``chunked_sparse`` (the memory-lean forms plugged into it), ``teacher_mixture`` (several teachers as one),
``aux_terms`` (MaxText's student terms), ``feature_projection`` (the learned map to the teacher's width) and
``metric_names``.
"""
