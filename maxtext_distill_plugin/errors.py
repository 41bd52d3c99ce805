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

"""User-facing errors: each names the key, the value and the fix; the CLI maps them to exit code 2."""

EXIT_USAGE = 2


class ConfigError(ValueError):
  """A configuration the run cannot start with."""

  def __init__(self, key: str, value, fix: str):
    self.key, self.value, self.fix = key, value, fix
    super().__init__(f"{key}={value!r} is invalid. Fix: {fix}")
