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

"""maxtext-distill: knowledge distillation for MaxText, installed as a plugin.

Importing this package is cheap on purpose (it runs at interpreter start
through a ``.pth`` hook): no JAX, no MaxText. The trainer lives in
:mod:`maxtext_distill_plugin.training.trainer`, the command line in
:mod:`maxtext_distill_plugin.cli`.
"""

__version__ = "0.1.0"
