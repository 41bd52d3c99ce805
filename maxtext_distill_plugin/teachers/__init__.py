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


"""Teachers as adapters: each kind turns ``(its state, a batch)`` into a typed head for the loss (:mod:`loss.heads`).

``kinds``: a frozen MaxText model (online) and a cached top-k teacher (offline); ``ensemble``: several online
teachers in one run, mixed or routed per example.
"""
