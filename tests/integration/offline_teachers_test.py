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


"""Several offline teachers, one cache each, through the real config and trainer: refusals before any model is
built, and (``--slow``) a run on two caches of other top-k against one-cache runs."""

import os

import numpy as np
import pytest

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.training import trainer
from tests.conftest import TINY_YAML, read_metrics, run_cli
from tests.integration import offline_train_test

_TEACHER_BLOCK = "teacher_overrides:\n  base_num_decoder_layers: 2\n"


def _yaml(tmp_path, caches: dict[str, str], extra: str = "") -> str:
  with open(TINY_YAML, encoding="utf-8") as f:
    text = f.read().replace(_TEACHER_BLOCK, "")
  entries = "".join(f"  - name: {name}\n    offline_data_dir: {path}\n" for name, path in caches.items())
  os.makedirs(tmp_path, exist_ok=True)
  path = os.path.join(tmp_path, "caches.yml")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text + "teachers:\n" + entries + extra)
  return path


def _argv(tmp_path, yaml_path, *extra):
  return ["train_distill", yaml_path, "run_name=caches", f"base_output_directory={tmp_path}", *extra]


@pytest.mark.parametrize(
    "extra,cli,match",
    [
        pytest.param("", (), "distill_teacher_mixture='distribution'", id="distribution_over_other_supports"),
        pytest.param(
            "distill_teacher_mixture: route\n",
            (),
            "distill_teacher_mixture='route'",
            id="route_offline",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "distill_teacher_mixture: loss\n",
            ("offline_data_dir=/x",),
            "offline_data_dir",
            id="both_keys",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_bad_offline_teacher_lists_are_refused_before_any_model_is_built(tmp_path, extra, cli, match):
  caches = {"math": str(tmp_path / "math"), "code": str(tmp_path / "code")}
  with pytest.raises(ValueError, match=match):
    config.build(_argv(tmp_path, _yaml(tmp_path, caches, extra), *cli))


@pytest.mark.slow
def test_an_entry_mixing_a_cache_and_a_checkpoint_is_refused(tmp_path):
  path = _yaml(tmp_path, {"math": str(tmp_path / "math")}, "  - name: code\n    overrides: {load_parameters_path: /x}\n")
  with pytest.raises(ValueError, match="teachers="):
    config.build(_argv(tmp_path, path))


@pytest.mark.slow
def test_caches_of_other_sequences_are_refused(tmp_path_factory, teacher_checkpoint):
  short = offline_train_test._write_cache(tmp_path_factory, teacher_checkpoint, 16)  # pylint: disable=protected-access
  tmp_path = tmp_path_factory.mktemp("other")
  longer = os.path.join(tmp_path, "cache")
  proc = run_cli(
      TINY_YAML,
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"offline_data_dir={longer}",
      f"base_output_directory={tmp_path}",
      "steps=4",
      module="maxtext_distill_plugin.save_top_k_teacher_logits",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  yaml_path = _yaml(tmp_path, {"math": short, "code": longer}, "distill_teacher_mixture: loss\n")
  with pytest.raises(ValueError, match="teachers=.*differ in length"):
    config.build(_argv(tmp_path, yaml_path))


@pytest.mark.slow
def test_two_caches_give_the_weighted_sum_of_one_cache_runs(tmp_path_factory, teacher_checkpoint):
  """Caches of k = 16 and k = V of the same sequences at weights (0.25, 0.75): step 1's per-teacher losses are the
  one-cache runs' and the total their weighted sum."""
  write = offline_train_test._write_cache  # pylint: disable=protected-access
  caches = {
      "small": write(tmp_path_factory, teacher_checkpoint, 16),
      "full": write(tmp_path_factory, teacher_checkpoint, 512),
  }
  tmp_path = tmp_path_factory.mktemp("runs")
  yaml_path = _yaml(
      tmp_path / "both", caches, "distill_teacher_mixture: loss\ndistill_teacher_weights: {small: 0.25, full: 0.75}\n"
  )
  metrics = tmp_path / "both.jsonl"
  trainer.train(config.build(_argv(tmp_path / "both", yaml_path, "steps=1", f"metrics_file={metrics}")))
  both = [r for r in read_metrics(metrics) if "distill/total_loss" in r][0]
  alone = {}
  for name, path in caches.items():
    one_metrics = tmp_path / f"{name}.jsonl"
    argv = ["train_distill", TINY_YAML, f"offline_data_dir={path}", f"base_output_directory={tmp_path / name}"]
    trainer.train(config.build([*argv, "steps=1", f"metrics_file={one_metrics}"]))
    alone[name] = [r for r in read_metrics(one_metrics) if "distill/total_loss" in r][0]
    np.testing.assert_allclose(both[f"distill/teacher/{name}/soft_loss"], alone[name]["distill/soft_loss"], rtol=1e-6)
  want = 0.25 * alone["small"]["distill/total_loss"] + 0.75 * alone["full"]["distill/total_loss"]
  np.testing.assert_allclose(both["distill/total_loss"], want, rtol=1e-6)
