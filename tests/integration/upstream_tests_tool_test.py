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


"""tools/upstream_tests: the commit matching, the extraction, the two environments and the per-test comparison.

MaxText's own tests themselves run in ``make test-upstream`` (minutes, and they need a MaxText repository); here each
piece runs on small inputs: a throwaway git repository, JUnit files, and one pytest run per environment of a test that
reads which module ``maxtext.trainers.post_train.distillation.train_distill`` resolves to (``make test-slow``).
"""

import pathlib
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import DOCUMENTED_MODULE, REPO
from tools.upstream_tests import runs, source

DISTILLATION = pathlib.PurePosixPath(source.DISTILLATION_SOURCES)


def _git(repo, *args):
  subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _commit(repo, files: dict[str, str], message: str) -> str:
  for path, text in files.items():
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text, encoding="utf-8")
  _git(repo, "add", "-A")
  _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
  return subprocess.run(
      ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
  ).stdout.strip()


@pytest.fixture(name="maxtext_like_repo")
def _maxtext_like_repo(tmp_path):
  """Two commits of a repository laid out like MaxText's: ``(repo, first, second)``."""
  repo = tmp_path / "repo"
  repo.mkdir()
  _git(repo, "init", "-q")
  first = _commit(
      repo,
      {
          f"{DISTILLATION}/train_distill.py": "a = 1\nb = 2\nc = 3\n",
          f"{DISTILLATION}/distillation_utils.py": "u = 1\n",
          "pytest.ini": "[pytest]\n",
          "tests/__init__.py": "",
          "tests/conftest.py": "",
          "tests/utils/__init__.py": "",
          "tests/utils/test_helpers.py": "H = 1\n",
          "tests/utils/reference.txt": "not python\n",
          "tests/post_training/unit/distillation_metrics_test.py": "def test_x():\n  pass\n",
          "tests/post_training/unit/train_distill_test.py": "def test_y():\n  pass\n",
          "tests/post_training/unit/sft_test.py": "def test_z():\n  pass\n",
      },
      "first",
  )
  second = _commit(repo, {f"{DISTILLATION}/train_distill.py": "a = 1\nb = 20\nc = 3\n"}, "second")
  return repo, first, second


def _installed(tmp_path, train_distill: str) -> pathlib.Path:
  installed = tmp_path / "installed"
  installed.mkdir(parents=True)
  (installed / "train_distill.py").write_text(train_distill, encoding="utf-8")
  (installed / "distillation_utils.py").write_text("u = 1\n", encoding="utf-8")
  return installed


def test_the_commit_whose_sources_equal_the_installed_ones_is_chosen(maxtext_like_repo, tmp_path):
  repo, first, second = maxtext_like_repo
  assert source.matching_commit(repo, _installed(tmp_path, "a = 1\nb = 2\nc = 3\n")) == source.Match(first, 0, ())
  newest = source.matching_commit(repo, _installed(tmp_path / "n", "a = 1\nb = 20\nc = 3\n"))
  assert newest == source.Match(second, 0, ())


def test_without_an_exact_match_the_closest_commit_is_reported_with_its_differences(maxtext_like_repo, tmp_path):
  repo, _, second = maxtext_like_repo
  match = source.matching_commit(repo, _installed(tmp_path, "a = 1\nb = 20\nc = 30\n"))
  assert match == source.Match(second, 2, ("train_distill.py",)) and not match.exact


def test_extraction_takes_the_distillation_tests_and_their_support_and_overrides_the_tpu_skip(
    maxtext_like_repo, tmp_path
):
  repo, first, _ = maxtext_like_repo
  tests = source.extract(repo, first, tmp_path / "out")
  assert tests == [
      "tests/post_training/unit/distillation_metrics_test.py",
      "tests/post_training/unit/train_distill_test.py",
  ]
  written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
  assert written == [
      "pytest.ini",
      "tests/__init__.py",
      "tests/conftest.py",
      "tests/post_training/unit/conftest.py",
      *tests,
      "tests/utils/__init__.py",
      "tests/utils/test_helpers.py",
  ]
  override = (tmp_path / "out" / source.UNIT_TESTS / "conftest.py").read_text(encoding="utf-8")
  assert "def handle_tpu_only" in override


def _junit(path, cases: dict[str, str]):
  body = {"passed": "", "skipped": '<skipped message="why"/>', "failed": "<failure>E  boom\nmore</failure>"}
  body["error"] = "<error/>"
  rows = "".join(f'<testcase classname="m" name="{n}">{body[o]}</testcase>' for n, o in cases.items())
  path.write_text(f"<testsuites><testsuite>{rows}</testsuite></testsuites>", encoding="utf-8")
  return path


def test_outcomes_and_differences(tmp_path):
  without = runs.outcomes(_junit(tmp_path / "a.xml", {"t1": "passed", "t2": "failed", "t3": "skipped", "t4": "passed"}))
  with_plugin = runs.outcomes(
      _junit(tmp_path / "b.xml", {"t1": "passed", "t2": "failed", "t3": "skipped", "t4": "error"})
  )
  assert without == {"m::t1": "passed", "m::t2": "failed", "m::t3": "skipped", "m::t4": "passed"}
  assert runs.counts(without) == "2 passed, 1 skipped, 1 failed"
  assert runs.reasons(tmp_path / "a.xml") == {"m::t2": "E  boom", "m::t3": "why"}
  assert runs.differences(without, with_plugin) == [("m::t4", "passed", "error")]
  assert runs.differences(without, {**with_plugin, "m::t4": "passed", "m::t5": "passed"}) == [
      ("m::t5", "absent", "passed")
  ]


IDENTITY_TEST = f"""
import importlib.util
import pathlib


def test_the_documented_name_is_maxtexts_own_module():
  maxtext_dir = pathlib.Path(importlib.util.find_spec("maxtext").origin).parent
  assert importlib.util.find_spec("{DOCUMENTED_MODULE}").origin == str(
      maxtext_dir / "trainers" / "post_train" / "distillation" / "train_distill.py"
  )
"""


@pytest.mark.slow  # three environments and three pytest runs: about 10 s on an idle core
def test_the_two_environments_differ_by_the_plugin_only_and_the_comparison_catches_a_hook_that_serves_imports(
    tmp_path,
):
  """The comparison can fail: a hook that answered every import of the name (the old one) changes the outcome."""
  site_packages = sysconfig.get_paths()["purelib"]
  tests_root = tmp_path / "tests_root"
  tests_root.mkdir()
  (tests_root / "identity_test.py").write_text(IDENTITY_TEST, encoding="utf-8")
  serves_every_import = tmp_path / "hook.py"
  serves_every_import.write_text(
      (REPO / "_maxtext_distill_hook.py")
      .read_text(encoding="utf-8")
      .replace("if not runs_as_program():\n      return None", "pass"),
      encoding="utf-8",
  )
  results = {}
  for name, with_plugin, hook in (("without", False, None), ("with", True, None), ("served", True, serves_every_import)):
    python = runs.make_env(tmp_path / name, site_packages, with_plugin=with_plugin, hook_file=hook)
    assert runs.probe(python, tests_root) == (with_plugin, with_plugin)
    proc = runs.run_pytest(python, tests_root, ["identity_test.py"], tmp_path / f"{name}.xml", timeout_s=300)
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    results[name] = runs.outcomes(tmp_path / f"{name}.xml")
  assert list(results["without"].values()) == ["passed"]
  assert not runs.differences(results["without"], results["with"])
  assert runs.differences(results["without"], results["served"]) == [
      ("identity_test::test_the_documented_name_is_maxtexts_own_module", "passed", "failed")
  ]


def test_command_line_refuses_a_path_that_is_not_a_repository(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(REPO / "tools" / "run_upstream_tests.py"), "--repo", str(tmp_path)],
      capture_output=True,
      text=True,
      check=False,
  )
  assert proc.returncode == 2 and "--repo" in proc.stderr and "MAXTEXT_REPO" in proc.stderr


def test_command_line_names_a_commit_git_cannot_read(maxtext_like_repo):
  repo, _, _ = maxtext_like_repo
  proc = subprocess.run(
      [sys.executable, str(REPO / "tools" / "run_upstream_tests.py"), "--repo", str(repo), "--commit", "no-such-rev"],
      capture_output=True,
      text=True,
      check=False,
  )
  assert proc.returncode == 2 and "no-such-rev" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
