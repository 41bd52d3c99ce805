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

"""The plugin hooks into MaxText: the documented module, the upstream switch, forks, entry points, cheap import."""

import importlib.metadata
import subprocess
import sys

import pytest

from maxtext_distill_plugin import _compat
from tests.conftest import REPO, TINY_YAML, run_cli, subprocess_env


def test_import_is_cheap():
  code = (
      "import sys, maxtext_distill_plugin; bad = [m for m in ('jax', 'maxtext', 'flax') if m in sys.modules]; print(bad)"
  )
  out = subprocess.run(
      [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, env=subprocess_env()
  )
  assert out.stdout.strip() == "[]"


def test_documented_module_runs_the_plugin_and_names_it_first():
  proc = run_cli(TINY_YAML, "--dry-run", "teacher_overrides.load_parameters_path=/nonexistent")
  assert proc.returncode == 2
  first_log = next(line for line in proc.stderr.splitlines() if line[:1] in "IWE" and line[1:2].isdigit())
  assert "maxtext-distill" in first_log and "is the trainer" in first_log and "MaxText 0.2.5" in first_log


def test_upstream_switch_runs_maxtexts_own_module():
  env = subprocess_env()
  env["MAXTEXT_DISTILL_USE_UPSTREAM"] = "1"
  proc = run_cli(TINY_YAML, env=env, timeout=300)
  assert "is the trainer" not in proc.stderr
  # Upstream's module parses the same YAML with MaxText's stock config, which has no enable_nnx key.
  assert proc.returncode != 0 and "enable_nnx" in proc.stderr


def test_fork_without_the_module_is_served(tmp_path):
  """A MaxText fork that has no trainers.post_train.distillation package still gets the documented command."""
  fork = tmp_path / "fork"
  (fork / "maxtext" / "trainers").mkdir(parents=True)
  (fork / "maxtext" / "__init__.py").write_text("", encoding="utf-8")
  (fork / "maxtext" / "trainers" / "__init__.py").write_text("", encoding="utf-8")
  env = subprocess_env()
  env["PYTHONPATH"] = f"{fork}:{REPO}"
  proc = run_cli("--list", cwd=tmp_path, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "distillation.yml" in proc.stdout


def test_python_dash_m_package_and_console_script():
  assert "distillation.yml" in run_cli("--list", module="maxtext_distill_plugin").stdout
  script = pathlib_script()
  out = subprocess.run([script, "--list"], capture_output=True, text=True, check=True, env=subprocess_env())
  assert "distillation-pruning-recovery.yml" in out.stdout


def pathlib_script() -> str:
  import pathlib  # pylint: disable=import-outside-toplevel

  return str(pathlib.Path(sys.executable).parent / "maxtext-distill")


def test_trainer_is_registered_as_an_entry_point():
  entries = importlib.metadata.entry_points(group="maxtext_distill_plugin.trainers")
  (entry,) = [e for e in entries if e.name == "post_train/distillation"]
  from maxtext_distill_plugin import cli  # pylint: disable=import-outside-toplevel

  assert entry.load() is cli.main


@pytest.mark.parametrize("version,ok", [("0.2.5", True), ("0.2.9", True), ("0.2.4", False), ("0.3.0", False)])
def test_host_version_check_names_version_range_and_fix(monkeypatch, version, ok):
  monkeypatch.setattr(_compat, "maxtext_version", lambda: version)
  if ok:
    assert _compat.check_host(check_capabilities=False) == version
    return
  with pytest.raises(_compat.HostIncompatibleError) as info:
    _compat.check_host(check_capabilities=False)
  message = str(info.value)
  assert version in message and _compat.SUPPORTED_RANGE in message and "pip install" in message


def test_installed_host_has_every_capability():
  assert _compat.check_host() == importlib.metadata.version("maxtext")
