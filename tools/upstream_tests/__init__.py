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


"""MaxText's own distillation unit tests, run with the plugin installed and without it: same pass/fail per test.

    .venv/bin/python tools/run_upstream_tests.py --repo /path/to/maxtext [--commit REV] [--work-dir DIR]

The tests are not in MaxText's wheel, so they come from a MaxText git repository given as input (``make
test-upstream`` passes ``MAXTEXT_REPO``): :mod:`tools.upstream_tests.source` picks the commit whose
``trainers/post_train/distillation`` sources match the installed wheel and extracts the tests (and the conftest,
helpers and ``pytest.ini`` they need) into a temporary directory at run time; nothing of MaxText's is kept in this
repository. :mod:`tools.upstream_tests.runs` builds two environments from the same installed package set, one with
the plugin's files and one without, runs pytest in each and compares the outcomes test by test.
"""
