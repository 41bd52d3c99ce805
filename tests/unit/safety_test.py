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

"""Load-path safety: no pickle and no unsafe YAML anywhere in the product or its tools."""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for p in [*REPO.glob("maxtext_distill_plugin/**/*.py"), *REPO.glob("tools/*.py"), REPO / "_maxtext_distill_hook.py"]
)
FORBIDDEN = {
    "pickle module": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle)\b", re.M),
    "pickle.load(s)": re.compile(r"\bpickle\.loads?\("),
    "numpy allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "unsafe yaml.load": re.compile(r"yaml\.load\((?![^)]*SafeLoader)"),
    "yaml.unsafe_load": re.compile(r"yaml\.(unsafe_load|full_load)\("),
    "eval of data": re.compile(r"(?<![\w.])eval\("),
}


def test_sources_were_found():
  assert len(SOURCES) > 20


@pytest.mark.parametrize("name,pattern", sorted(FORBIDDEN.items()))
def test_no_unsafe_deserialisation(name, pattern):
  offenders = [f"{p.relative_to(REPO)}" for p in SOURCES if pattern.search(p.read_text(encoding="utf-8"))]
  assert not offenders, f"{name} in {offenders}"


def test_cache_records_hold_no_pickles():
  """The cache reader refuses a record that is not our binary layout (e.g. a pickle) instead of executing it."""
  import pickle  # pylint: disable=import-outside-toplevel  # only to build the hostile payload

  from maxtext_distill_plugin.teacher_cache import format as cache_format  # pylint: disable=import-outside-toplevel

  payload = pickle.dumps({"inputs": [1, 2, 3]})
  with pytest.raises(Exception) as info:
    cache_format.decode_record(payload, vocab_size=512)
  assert not isinstance(info.value, (SystemExit, KeyboardInterrupt))
