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


"""MaxText's own distillation unit tests with the plugin installed and without it: the same pass/fail per test.

    .venv/bin/python tools/run_upstream_tests.py --repo /path/to/maxtext [--commit REV] [--keep DIR]

``make test-upstream`` runs it with ``--repo $(MAXTEXT_REPO)``. Exit 0 when every test has the same outcome in both
runs, 1 when one differs (each is listed), 2 on bad input or when git or an environment fails.
See :mod:`tools.upstream_tests`.
"""

import argparse
import importlib.util
import pathlib
import shutil
import sys
import sysconfig
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from tools.upstream_tests import runs, source  # pylint: disable=wrong-import-position


def _installed_distillation_dir() -> pathlib.Path:
  spec = importlib.util.find_spec("maxtext")
  if spec is None or not spec.origin:
    raise SystemExit("run_upstream_tests: MaxText is not installed in this interpreter; run it with .venv/bin/python")
  return pathlib.Path(spec.origin).parent / "trainers" / "post_train" / "distillation"


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  parser.add_argument("--repo", required=True, help="a MaxText git repository (bare or not) holding the wheel's commit")
  parser.add_argument("--commit", help="the commit to take the tests from (default: the one matching the wheel)")
  parser.add_argument("--keep", help="work in this new directory and keep it (default: a temporary one, removed)")
  parser.add_argument("--hook-file", help="use this import hook in the 'with' run (to measure another version)")
  args = parser.parse_args(argv)
  if not (pathlib.Path(args.repo) / "HEAD").exists() and not (pathlib.Path(args.repo) / ".git").exists():
    parser.error(f"--repo {args.repo}: not a git repository. Fix: pass MaxText's clone, e.g. MAXTEXT_REPO=/path/maxtext")
  return args


def _run_both(args, work: pathlib.Path) -> int:
  installed = _installed_distillation_dir()
  if args.commit:
    commit = args.commit
    print(f"commit {commit} (given)")
  else:
    match = source.matching_commit(args.repo, installed)
    commit = match.commit
    what = (
        "matches the installed sources"
        if match.exact
        else (
            f"closest to the installed sources: {match.differing_lines} lines differ in"
            f" {', '.join(match.differing_files)}"
        )
    )
    print(f"commit {commit}: {what}")
  tests = source.extract(args.repo, commit, work / "tests_root")
  print(f"tests: {' '.join(tests)} (+ MaxText's conftest, tests/utils, pytest.ini; TPU skip overridden)")
  print(f"pytest -m {runs.DESELECT_MARKERS!r}, XLA_FLAGS={runs.CPU_DEVICES_FLAG}")
  site_packages = sysconfig.get_paths()["purelib"]
  results = {}
  for name, with_plugin in (("without", False), ("with", True)):
    python = runs.make_env(work / name, site_packages, with_plugin=with_plugin, hook_file=args.hook_file)
    hooked, importable = runs.probe(python, work / "tests_root")
    if (hooked, importable) != (with_plugin, with_plugin):
      raise RuntimeError(f"the '{name}' environment has hook={hooked}, plugin importable={importable}")
    start = time.monotonic()
    proc = runs.run_pytest(python, work / "tests_root", tests, work / f"{name}.xml")
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    results[name] = runs.outcomes(work / f"{name}.xml")
    print(
        f"{name} the plugin: {runs.counts(results[name])} ({time.monotonic() - start:.0f} s, pytest exit"
        f" {proc.returncode})"
    )
  why = runs.reasons(work / "without.xml")
  for test, outcome in sorted(results["with"].items()):
    if outcome != "passed" and results["without"].get(test) == outcome:
      print(f"  {outcome} in both runs: {test} ({why.get(test, '')})")
  diffs = runs.differences(results["without"], results["with"])
  for test, without, with_plugin in diffs:
    print(f"  DIFFERS {test}: {without} without the plugin, {with_plugin} with it")
  print("same outcome for every test" if not diffs else f"{len(diffs)} tests differ")
  return 0 if not diffs else 1


def main(argv=None) -> int:
  args = _parse(argv)
  work = pathlib.Path(args.keep) if args.keep else pathlib.Path(tempfile.mkdtemp(prefix="maxtext-upstream-tests-"))
  work.mkdir(parents=True, exist_ok=bool(not args.keep))
  try:
    return _run_both(args, work)
  except RuntimeError as e:  # git or an environment failed: say which, without a traceback
    print(f"run_upstream_tests: {e}", file=sys.stderr)
    return 2
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)
    else:
      print(f"kept {work} (logs: without.log, with.log)")


if __name__ == "__main__":
  sys.exit(main())
