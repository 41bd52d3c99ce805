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

"""Orchestration over MaxText.

``step`` (the compiled train and eval steps, and the ``auto`` policy of the student's head), ``sources`` (where each
step's batch comes from: the dataset, a teacher cache, on-policy samples), ``on_policy`` and ``on_policy_data``
(sampled batches), ``trainer`` (the loop), ``objective_params`` (the objective's own parameters),
``metrics_logger``, ``run_guard`` (preemption, non-finite losses), ``run_record`` and ``data_resume`` (the dataset's
position on resume).
"""
