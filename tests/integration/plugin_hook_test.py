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

"""The plugin hooks into MaxText: the documented command runs it, importers get MaxText's own module, forks, switch."""

import importlib
import importlib.metadata
import importlib.util
import pathlib
import subprocess
import sys

import pytest

from maxtext_distill_plugin import _compat
from tests.conftest import DOCUMENTED_MODULE, REPO, TINY_YAML, run_cli, subprocess_env


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


def _fake_host(root, *, with_module: bool):
  """A MaxText fork on ``PYTHONPATH`` (ahead of the installed one): with its own trainer module, or without it."""
  package = root / "maxtext"
  (package / "trainers").mkdir(parents=True)
  (package / "__init__.py").write_text("", encoding="utf-8")
  (package / "trainers" / "__init__.py").write_text("", encoding="utf-8")
  if with_module:
    module_dir = package / "trainers" / "post_train" / "distillation"
    module_dir.mkdir(parents=True)
    (module_dir.parent / "__init__.py").write_text("", encoding="utf-8")
    (module_dir / "__init__.py").write_text("", encoding="utf-8")
    (module_dir / "train_distill.py").write_text(
        "HOSTS_OWN = True\nif __name__ == '__main__':\n  print('the host module ran')\n", encoding="utf-8"
    )
  env = subprocess_env()
  env["PYTHONPATH"] = f"{root}:{REPO}"
  return env


def _python(code: str, env, cwd) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
  )


def test_importing_the_documented_name_gives_maxtexts_own_module():
  """With the plugin installed, importers get the installed MaxText's trainer and its public names, not the plugin."""
  spec = importlib.util.find_spec(DOCUMENTED_MODULE)
  maxtext_dir = pathlib.Path(importlib.util.find_spec("maxtext").origin).parent
  assert pathlib.Path(spec.origin) == maxtext_dir / "trainers" / "post_train" / "distillation" / "train_distill.py"
  module = importlib.import_module(DOCUMENTED_MODULE)
  assert pathlib.Path(module.__file__) == pathlib.Path(spec.origin)
  assert callable(module.main) and isinstance(module.MaxTextDistillationTrainer, type)
  assert not hasattr(module, "cli")  # the plugin's entry module has only `cli`


def test_fork_with_the_module_imports_its_own_and_runs_the_plugin_with_dash_m(tmp_path):
  env = _fake_host(tmp_path / "fork", with_module=True)
  imported = _python(f"import {DOCUMENTED_MODULE} as m; print(m.HOSTS_OWN, m.__file__)", env, tmp_path)
  assert imported.returncode == 0 and imported.stdout.startswith(f"True {tmp_path / 'fork'}"), imported.stderr[-2000:]
  ran = run_cli("--list", cwd=tmp_path, env=env, timeout=120)
  assert ran.returncode == 0 and "distillation.yml" in ran.stdout and "host module" not in ran.stdout, ran.stderr[-2000:]
  env["MAXTEXT_DISTILL_USE_UPSTREAM"] = "1"
  switched = run_cli("--list", cwd=tmp_path, env=env, timeout=120)
  assert switched.returncode == 0 and switched.stdout.strip() == "the host module ran", switched.stderr[-2000:]


def test_runpy_launchers_get_the_plugin_only_when_running_as_main(tmp_path):
  """``runpy.run_module(..., run_name='__main__')`` is a run (the plugin); runpy under the module's own name is not."""
  env = _fake_host(tmp_path / "fork", with_module=True)
  as_main = f"import runpy, sys; sys.argv = ['x', '--list']; runpy.run_module({DOCUMENTED_MODULE!r}, run_name='__main__')"
  ran = _python(as_main, env, tmp_path)
  assert ran.returncode == 0 and "distillation.yml" in ran.stdout and "host module" not in ran.stdout, ran.stderr[-2000:]
  by_name = f"import runpy; print(runpy.run_module({DOCUMENTED_MODULE!r}).get('HOSTS_OWN'))"
  imported = _python(by_name, env, tmp_path)
  assert imported.returncode == 0 and imported.stdout.strip() == "True", imported.stderr[-2000:]


def test_fork_without_the_module_is_served(tmp_path):
  """A MaxText fork that has no trainers.post_train.distillation package still gets the documented command."""
  env = _fake_host(tmp_path / "fork", with_module=False)
  proc = run_cli("--list", cwd=tmp_path, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "distillation.yml" in proc.stdout
  # Only the command: importing the name in such a fork fails as it would without the plugin.
  imported = _python(f"import {DOCUMENTED_MODULE}", env, tmp_path)
  assert imported.returncode == 1
  assert "ModuleNotFoundError: No module named 'maxtext.trainers.post_train'" in imported.stderr


def test_python_dash_m_package_and_console_script():
  assert "distillation.yml" in run_cli("--list", module="maxtext_distill_plugin").stdout
  script = str(pathlib.Path(sys.executable).parent / "maxtext-distill")
  out = subprocess.run([script, "--list"], capture_output=True, text=True, check=True, env=subprocess_env())
  assert "distillation-pruning-recovery.yml" in out.stdout


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
