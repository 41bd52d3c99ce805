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

"""The module behind ``python -m maxtext.trainers.post_train.distillation.train_distill``.

The plugin's import hook serves this file under MaxText's documented module
name only when that name is run as the program (``python -m``, or runpy with
``run_name='__main__'``); importing the name gives the host's own module. This
file only hands over to the plugin's command line.
"""

from maxtext_distill_plugin import cli

if __name__ == "__main__":
  cli.main()
