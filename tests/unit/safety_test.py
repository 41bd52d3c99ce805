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

import os
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p
    for p in [
        *REPO.glob("maxtext_distill_plugin/**/*.py"),
        *REPO.glob("tools/**/*.py"),
        REPO / "_maxtext_distill_hook.py",
    ]
)
FORBIDDEN = {
    "pickle module": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle)\b", re.M),
    "pickle.load(s)": re.compile(r"\bpickle\.loads?\("),
    "numpy allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "unsafe yaml.load": re.compile(r"yaml\.load\((?![^)]*SafeLoader)"),
    "yaml.unsafe_load": re.compile(r"yaml\.(unsafe_load|full_load)\("),
    "eval of data": re.compile(r"(?<![\w.])eval\("),
}


def test_every_python_file_outside_the_tests_is_scanned():
  """The scan covers exactly the repository's Python files (tracked or new, not ignored) outside tests/."""
  listed = subprocess.run(
      ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.py"],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=True,
  ).stdout.split()
  expected = {name for name in listed if not name.startswith("tests/") and (REPO / name).is_file()}
  assert "maxtext_distill_plugin/teacher_cache/reader.py" in expected and "tools/bench_distill.py" in expected
  assert {str(p.relative_to(REPO)) for p in SOURCES} == expected


@pytest.mark.parametrize("name,pattern", sorted(FORBIDDEN.items()))
def test_no_unsafe_deserialisation(name, pattern):
  offenders = [f"{p.relative_to(REPO)}" for p in SOURCES if pattern.search(p.read_text(encoding="utf-8"))]
  assert not offenders, f"{name} in {offenders}"


class _Hostile:
  """Unpickling this creates a directory: the proof that a reader executed a pickle."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.mkdir, (self.marker,))


def test_cache_records_hold_no_pickles(tmp_path):
  """The cache reader refuses a record that is not our binary layout (e.g. a pickle) instead of executing it."""
  import pickle  # pylint: disable=import-outside-toplevel  # only to build the hostile payload

  from maxtext_distill_plugin.teacher_cache import format as cache_format  # pylint: disable=import-outside-toplevel

  marker = tmp_path / "executed"
  payload = pickle.dumps({"inputs": [1, 2, 3], "payload": _Hostile(str(marker))})
  with pytest.raises(ValueError, match=r"not a teacher-cache record \(magic b'\\x80.*expected b'TKR1'\)"):
    cache_format.decode_record(payload, vocab_size=512)
  assert not marker.exists()
