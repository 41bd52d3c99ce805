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


"""Two environments that differ only by the plugin's files, one pytest run in each, and the per-test comparison.

Each environment is a fresh virtual environment of the base interpreter whose site-packages adds (with
``site.addsitedir``, so ``.pth`` files run as in a real install) a directory of links to every entry of the given
site-packages: all of them, or all but the plugin's (its package, its ``.pth`` import hook and its dist-info). So
"without" is MaxText's environment as it was before ``pip install`` of the plugin, and "with" is the same after it.
"""

import collections
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

PLUGIN_ENTRIES = ("maxtext_distill_plugin", "_maxtext_distill_hook.py", "maxtext_distill_plugin.pth")
HOOK_FILE = "_maxtext_distill_hook.py"
# Upstream's marker for tests that call out to Google Cloud (its data-processing test fetches a tokenizer with
# gsutil); MaxText's own CI deselects them when it runs without the cloud, and so does this offline run.
DESELECT_MARKERS = "not external_training"
# MaxText's metrics test has two cases for >= 4 devices; a CPU provides them as host devices.
CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count=4"
_SEVERITY = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}

PROBE = (
    "import importlib.util, sys;"
    "hooked = any(getattr(f, 'maxtext_distill_hook', False) for f in sys.meta_path);"
    "print(hooked, importlib.util.find_spec('maxtext_distill_plugin') is not None)"
)


def is_plugin_entry(name: str) -> bool:
  return name in PLUGIN_ENTRIES or (name.startswith("maxtext_distill_plugin-") and name.endswith(".dist-info"))


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def make_env(root, site_packages, *, with_plugin: bool, hook_file=None) -> pathlib.Path:
  """A virtual environment under ``root`` seeing ``site_packages`` with or without the plugin; returns its python.

  ``hook_file`` replaces the plugin's import hook in the "with" environment (to measure another version of it).
  """
  root, site_packages = pathlib.Path(root), pathlib.Path(site_packages)
  shadow = root / "site-packages"
  shadow.mkdir(parents=True)
  for entry in sorted(site_packages.iterdir()):
    if with_plugin or not is_plugin_entry(entry.name):
      target = pathlib.Path(hook_file).resolve() if hook_file and entry.name == HOOK_FILE else entry
      (shadow / entry.name).symlink_to(target)
  venv = root / "venv"
  proc = _run([os.path.join(sys.base_prefix, "bin", "python3"), "-m", "venv", "--without-pip", str(venv)])
  if proc.returncode != 0:
    raise RuntimeError(f"python -m venv {venv} failed: {proc.stderr[-2000:]}")
  python = venv / "bin" / "python"
  purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
  pathlib.Path(purelib, "zz_package_set.pth").write_text(f"import site; site.addsitedir({str(shadow)!r})\n", "utf-8")
  return python


def probe(python, cwd) -> tuple[bool, bool]:
  """``(hook installed, plugin importable)`` in the interpreter ``python`` run in ``cwd`` (which run is which)."""
  proc = _run([str(python), "-c", PROBE], env=clean_env(), cwd=cwd)
  if proc.returncode != 0:
    raise RuntimeError(f"{python} cannot start: {proc.stderr[-2000:]}")
  hooked, importable = proc.stdout.split()
  return hooked == "True", importable == "True"


def clean_env() -> dict:
  """The caller's environment without what would change imports or the trainer module that runs, on the CPU."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAXTEXT_DISTILL_USE_UPSTREAM")}
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {CPU_DEVICES_FLAG}".strip()
  return env


def run_pytest(python, tests_root, test_files, junit, timeout_s: int = 3600) -> subprocess.CompletedProcess:
  """MaxText's tests with MaxText's ``pytest.ini`` (rootdir ``tests_root``), outcomes into the JUnit XML ``junit``."""
  cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-m", DESELECT_MARKERS]
  cmd += [f"--junitxml={junit}", *test_files]
  proc = _run(cmd, cwd=tests_root, env=clean_env(), timeout=timeout_s)
  if not pathlib.Path(junit).exists():
    raise RuntimeError(f"pytest wrote no results (exit {proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}")
  return proc


def outcomes(junit) -> dict[str, str]:
  """``{test id: passed | skipped | failed | error}`` from a JUnit XML file (the worst phase of each test)."""
  result = {}
  for case in ET.parse(junit).iter("testcase"):
    test_id = f"{case.get('classname')}::{case.get('name')}"
    found = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
    worst = max((("failed" if tag == "failure" else tag) for tag in found), key=_SEVERITY.get, default="passed")
    result[test_id] = max(result.get(test_id, "passed"), worst, key=_SEVERITY.get)
  return result


def reasons(junit) -> dict[str, str]:
  """``{test id: first line of its failure, error or skip message}`` for the tests that did not pass."""
  result = {}
  for case in ET.parse(junit).iter("testcase"):
    for child in case:
      if child.tag in ("skipped", "failure", "error"):
        message = (child.get("message") or child.text or "").strip().splitlines()
        result[f"{case.get('classname')}::{case.get('name')}"] = message[0][:200] if message else ""
  return result


def differences(without: dict[str, str], with_plugin: dict[str, str]) -> list[tuple[str, str, str]]:
  """``(test, outcome without the plugin, outcome with it)`` for every test whose outcome differs (or is missing)."""
  return [
      (test, without.get(test, "absent"), with_plugin.get(test, "absent"))
      for test in sorted(set(without) | set(with_plugin))
      if without.get(test) != with_plugin.get(test)
  ]


def counts(results: dict[str, str]) -> str:
  tally = collections.Counter(results.values())
  return ", ".join(f"{tally[o]} {o}" for o in sorted(tally, key=_SEVERITY.get))
