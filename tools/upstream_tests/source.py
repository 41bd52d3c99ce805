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


"""Where MaxText's tests come from: the repository commit that matches the installed wheel, and the extraction.

The wheel carries no commit id, so the commit is found by content: among the commits that touched MaxText's
distillation sources, the one whose ``*.py`` files there equal the installed ones (git blob ids), else the closest
(fewest differing lines), which is reported with its differences.
"""

import dataclasses
import difflib
import hashlib
import io
import pathlib
import subprocess
import tarfile

DISTILLATION_SOURCES = "src/maxtext/trainers/post_train/distillation"
UNIT_TESTS = "tests/post_training/unit"
# MaxText's distillation unit tests: the ones on the trainer module and its utilities.
TEST_PATTERNS = ("distillation_*_test.py", "train_distill_test.py")
# What those tests import or read besides themselves (tests.utils helpers, the root conftest, markers).
SUPPORT_FILES = ("pytest.ini", "tests/__init__.py", "tests/conftest.py")
SUPPORT_DIRS = ("tests/utils",)
# Ours, written next to the tests: MaxText's root conftest skips `tpu_only` tests unless JAX sees a TPU; these run on a
# CPU, so this conftest overrides only that autouse fixture (by name, as pytest lets a nearer conftest do).
TPU_SKIP_OVERRIDE = '''"""Written by maxtext-distill's tools/upstream_tests: MaxText's tpu_only tests on a CPU."""

import pytest


@pytest.fixture(autouse=True)
def handle_tpu_only():
  """Replaces the root conftest's fixture of this name, which skips the test when JAX sees no TPU."""
  yield
'''


@dataclasses.dataclass(frozen=True)
class Match:
  """The commit chosen for an installed MaxText, and how far its distillation sources are from the installed ones."""

  commit: str
  differing_lines: int
  differing_files: tuple[str, ...]

  @property
  def exact(self) -> bool:
    return not self.differing_files


def _git(repo, *args: str, data: bytes | None = None) -> bytes:
  proc = subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"git {' '.join(args)} in {repo} failed: {proc.stderr.decode(errors='replace').strip()}")
  return proc.stdout


def blob_id(data: bytes) -> str:
  """Git's id of a file's contents (what ``git hash-object`` prints)."""
  return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _read_blobs(repo, ids: set[str]) -> dict[str, bytes]:
  """Many blobs in one ``git cat-file --batch``."""
  ordered = sorted(ids)
  out = _git(repo, "cat-file", "--batch", data="".join(i + "\n" for i in ordered).encode())
  blobs, pos = {}, 0
  for blob in ordered:
    header_end = out.index(b"\n", pos)
    header = out[pos:header_end].split()
    if header[-1] == b"missing":  # a partial clone may lack old blobs: such a file counts as wholly different
      blobs[blob], pos = None, header_end + 1
      continue
    size = int(header[2])
    blobs[blob] = out[header_end + 1 : header_end + 1 + size]
    pos = header_end + 1 + size + 1
  return blobs


def _tree_py_files(repo, commit: str) -> dict[str, str]:
  listing = _git(repo, "ls-tree", "-r", commit, "--", DISTILLATION_SOURCES + "/").decode()
  files = {}
  for line in listing.splitlines():
    meta, path = line.split("\t", 1)
    name = path[len(DISTILLATION_SOURCES) + 1 :]
    if name.endswith(".py") and "/" not in name:
      files[name] = meta.split()[2]
  return files


def _changed_lines(a: bytes | None, b: bytes) -> int:
  if a is None:
    return len(b.splitlines())
  diff = difflib.unified_diff(a.decode(errors="replace").splitlines(), b.decode(errors="replace").splitlines(), n=0)
  return sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def matching_commit(repo, installed_distillation_dir) -> Match:
  """The commit of ``repo`` whose distillation ``*.py`` files are (closest to) the installed ones."""
  installed_dir = pathlib.Path(installed_distillation_dir)
  installed = {p.name: p.read_bytes() for p in installed_dir.glob("*.py")}
  if not installed:
    raise RuntimeError(f"no MaxText distillation sources in {installed_dir}")
  commits = _git(repo, "rev-list", "--all", "--date-order", "--", DISTILLATION_SOURCES).decode().split()
  if not commits:
    raise RuntimeError(f"{repo} has no commit that touches {DISTILLATION_SOURCES}: is it a MaxText repository?")
  trees = {c: _tree_py_files(repo, c) for c in commits}
  wanted = {blob for tree in trees.values() for name, blob in tree.items() if name in installed}
  blobs = _read_blobs(repo, {b for b in wanted if b not in {blob_id(d) for d in installed.values()}})
  best = None
  for commit in commits:  # newest first: ties go to the newest commit
    tree, lines, differing = trees[commit], 0, []
    for name, data in sorted(installed.items()):
      if tree.get(name) == blob_id(data):
        continue
      differing.append(name)
      lines += _changed_lines(blobs[tree[name]], data) if name in tree else len(data.splitlines())
    lines += sum(1 for name in tree if name not in installed)  # a file only the commit has counts as one line
    differing += sorted(name for name in tree if name not in installed)
    if best is None or lines < best.differing_lines:
      best = Match(commit, lines, tuple(differing))
    if best.exact:
      break
  return best


def test_files(repo, commit: str) -> list[str]:
  """The distillation unit tests at ``commit`` (repository paths)."""
  listed = _git(repo, "ls-tree", "--name-only", commit, "--", UNIT_TESTS + "/").decode().split()
  return sorted(p for p in listed if any(pathlib.PurePath(p).match(pattern) for pattern in TEST_PATTERNS))


def extract(repo, commit: str, dest) -> list[str]:
  """Writes the tests and what they need at ``commit`` under ``dest``; returns the test files (relative paths)."""
  dest = pathlib.Path(dest)
  tests = test_files(repo, commit)
  if not tests:
    raise RuntimeError(f"no {' or '.join(TEST_PATTERNS)} under {UNIT_TESTS} at {commit} in {repo}")
  support = _git(repo, "ls-tree", "--name-only", commit, "--", *SUPPORT_FILES).decode().split()
  for directory in SUPPORT_DIRS:
    listed = _git(repo, "ls-tree", "--name-only", commit, "--", directory + "/").decode().split()
    support += [p for p in listed if p.endswith(".py")]
  archive = _git(repo, "archive", "--format=tar", commit, "--", *support, *tests)
  with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    tar.extractall(dest, filter="data")
  override = dest / UNIT_TESTS / "conftest.py"
  if override.exists():
    raise RuntimeError(f"{commit} has its own {UNIT_TESTS}/conftest.py; the TPU-skip override would replace it")
  override.write_text(TPU_SKIP_OVERRIDE, encoding="utf-8")
  return tests
