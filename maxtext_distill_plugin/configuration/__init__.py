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

"""The run's configuration, and every check that refuses bad input before a model is built.

``settings`` (the typed ``distill_*`` keys), ``config`` (MaxText's student and teacher configs and the cross-checks),
``teacher_configs`` (the teachers' configs), ``checkpoint_paths`` and ``checkpoint_checks`` (the checkpoints a run
reads), ``feature_checks`` (the feature loss across both models), ``multi_teacher``, ``data_sources``,
``cache_checks`` (a teacher cache against the student) and ``on_policy_checks``.
"""
