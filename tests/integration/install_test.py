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

"""Installing as users will: a wheel built from the tree, installed next to an existing MaxText environment.

The environment is a fresh virtual environment of the same interpreter that sees the pinned set of this
checkout's ``.venv`` *without* the plugin: its site-packages adds (with ``site.addsitedir``, so their ``.pth``
files run) a directory of links to every entry of ``.venv``'s site-packages except the plugin's own. No network:
pip installs the wheel with ``--no-index`` and must find every dependency already there.
"""

import os
import pathlib
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import DOCUMENTED_MODULE, REPO, subprocess_env

_PLUGIN_ENTRIES = ("maxtext_distill_plugin", "_maxtext_distill_hook.py", "maxtext_distill_plugin.pth")


def _run(cmd, cwd, timeout=300) -> subprocess.CompletedProcess:
  env = subprocess_env()
  env.pop("PYTHONPATH", None)
  return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _is_plugin(name: str) -> bool:
  return name in _PLUGIN_ENTRIES or (name.startswith("maxtext_distill_plugin-") and name.endswith(".dist-info"))


@pytest.fixture(scope="module")
def user_env(tmp_path_factory):
  """``(python, scripts_dir, wheel)``: a fresh venv with the pinned set and the plugin installed from its wheel."""
  root = tmp_path_factory.mktemp("install")
  proc = _run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), "."], REPO
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  wheels = sorted((root / "dist").glob("maxtext_distill_plugin-*.whl"))
  assert len(wheels) == 1, wheels

  pinned = pathlib.Path(sysconfig.get_paths()["purelib"])
  shadow = root / "pinned-site-packages"
  shadow.mkdir()
  for entry in pinned.iterdir():
    if not _is_plugin(entry.name):
      (shadow / entry.name).symlink_to(entry)
  venv = root / "venv"
  proc = _run([sys.base_prefix + "/bin/python3", "-m", "venv", "--without-pip", str(venv)], root)
  assert proc.returncode == 0, proc.stderr[-3000:]
  python = venv / "bin" / "python"
  site = pathlib.Path(
      _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).stdout.strip()
  )
  (site / "zz_pinned_set.pth").write_text(f"import site; site.addsitedir({str(shadow)!r})\n", encoding="utf-8")

  before = _run([str(python), "-c", "import maxtext_distill_plugin"], root)
  assert before.returncode != 0, "the fresh environment must not have the plugin before the wheel is installed"
  install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--disable-pip-version-check"]
  proc = _run([*install, str(wheels[0])], root)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return python, venv / "bin", wheels[0]


def test_the_wheel_holds_the_package_the_hook_and_the_configs(user_env):
  import zipfile  # pylint: disable=import-outside-toplevel

  with zipfile.ZipFile(user_env[2]) as wheel:
    names = wheel.namelist()
  shipped = sorted(p.name for p in (REPO / "configs").glob("*.yml"))
  assert {"maxtext_distill_plugin.pth", "_maxtext_distill_hook.py", "maxtext_distill_plugin/cli.py"} <= set(names)
  assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("maxtext_distill_plugin/configs/")) == shipped


def test_installed_plugin_lists_its_configs_from_site_packages(user_env, tmp_path):
  python, scripts, _ = user_env
  where = _run([str(python), "-c", "import maxtext_distill_plugin as p; print(p.__file__)"], tmp_path)
  assert where.returncode == 0 and str(python.parent.parent) in where.stdout, where.stdout + where.stderr
  listed = _run([str(scripts / "maxtext-distill"), "--list"], tmp_path)
  assert listed.returncode == 0, listed.stderr[-2000:]
  assert listed.stdout.split() == sorted(p.name for p in (REPO / "configs").glob("*.yml"))


def test_documented_command_serves_the_plugin_and_finds_a_config_by_name(user_env, tmp_path, teacher_checkpoint):
  python, _, _ = user_env
  proc = _run(
      [
          str(python),
          "-m",
          DOCUMENTED_MODULE,
          "distillation-cpu-tiny.yml",  # by name: resolved among the installed package's configs
          f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
          f"base_output_directory={tmp_path / 'out'}",
          "--dry-run",
      ],
      tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  log_lines = [line for line in proc.stderr.splitlines() if line[:1] in "IWEF" and line[1:5].isdigit()]
  assert log_lines and "maxtext-distill" in log_lines[0] and "is the trainer" in log_lines[0], log_lines[:3]
  assert "mode: online" in proc.stdout and "layers=1" in proc.stdout
  assert os.path.isdir(python.parent.parent) and not (tmp_path / "out").exists()


def test_installed_plugin_leaves_the_documented_name_to_maxtext_for_importers(user_env, tmp_path):
  python, _, _ = user_env
  code = f"import importlib.util as u, maxtext; print(u.find_spec({DOCUMENTED_MODULE!r}).origin, maxtext.__file__)"
  proc = _run([str(python), "-c", code], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  origin, package_init = proc.stdout.split()
  assert origin == package_init.replace("__init__.py", "trainers/post_train/distillation/train_distill.py"), proc.stdout
