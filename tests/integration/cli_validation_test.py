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

"""Bad input is refused by the real CLI before any model is built, with the key named and exit code 2."""

import pytest

from maxtext_distill_plugin import cli
from tests.conftest import REPO, TINY_YAML, run_cli

_FEATURES = ("distill_beta=0.5", "distill_layer_indices=[0]")

# (case id, extra CLI arguments, text the error must contain)
BAD_CLI = [
    ("alpha_above_one", ["distill_alpha=1.5"], "distill_alpha"),
    ("alpha_end_negative", ["distill_alpha_end=-0.1", "distill_alpha_schedule=linear"], "distill_alpha_end"),
    ("alpha_not_a_number", ["distill_alpha=abc"], "distill_alpha"),
    ("temperature_zero", ["distill_temperature=0"], "distill_temperature"),
    (
        "temperature_end_negative",
        ["distill_temperature_end=-1", "distill_temperature_schedule=cosine"],
        "distill_temperature_end",
    ),
    ("beta_negative", ["distill_beta=-0.5"], "distill_beta"),
    ("beta_end_negative", ["distill_beta_end=-1", "distill_beta_schedule=linear"], "distill_beta_end"),
    ("unknown_schedule", ["distill_alpha_schedule=exponential"], "distill_alpha_schedule"),
    ("schedule_without_end", ["distill_alpha_schedule=linear"], "distill_alpha_end"),
    ("unknown_feature_loss", ["distill_feature_loss_type=kl"], "distill_feature_loss_type"),
    ("features_without_scan", [*_FEATURES, "scan_layers=False"], "scan_layers"),
    (
        "ramp_from_zero_without_scan",
        ["distill_beta_end=0.5", "distill_beta_schedule=linear", "scan_layers=False"],
        "scan_layers",
    ),
    ("features_with_nnx_off", [*_FEATURES, "enable_nnx=False"], "enable_nnx"),
    ("layer_index_duplicated", ["distill_beta=0.5", "distill_layer_indices=[0,0]"], "distill_layer_indices"),
    ("layer_index_out_of_range", ["distill_beta=0.5", "distill_layer_indices=[5]"], "distill_layer_indices"),
    ("layer_index_negative", ["distill_beta=0.5", "distill_layer_indices=[-1]"], "distill_layer_indices"),
    ("layer_index_not_int", ["distill_beta=0.5", "distill_layer_indices=[a]"], "distill_layer_indices"),
    ("features_depth_mismatch_no_indices", ["distill_beta=0.5"], "distill_layer_indices"),
    (
        "teacher_layer_index_out_of_range",
        ["distill_beta=0.5", "distill_layer_indices=[0]", "distill_teacher_layer_indices=[2]"],
        "distill_teacher_layer_indices",
    ),
    (
        "teacher_layer_indices_unpaired",
        ["distill_beta=0.5", "distill_layer_indices=[0]", "distill_teacher_layer_indices=[0,1]"],
        "distill_teacher_layer_indices",
    ),
    (
        "student_layer_index_out_of_range_with_teacher_pairs",
        ["distill_beta=0.5", "distill_layer_indices=[1]", "distill_teacher_layer_indices=[1]"],
        "distill_layer_indices",
    ),
    (
        "teacher_layer_indices_without_student_indices_miscounted",
        ["distill_beta=0.5", "distill_teacher_layer_indices=[0,1]"],
        "distill_teacher_layer_indices",
    ),
    ("feature_projection_unknown", [*_FEATURES, "distill_feature_projection=mlp"], "distill_feature_projection"),
    ("feature_projection_without_feature_loss", ["distill_feature_projection=linear"], "distill_feature_projection"),
    ("feature_widths_differ_without_projection", [*_FEATURES, "student_overrides.base_emb_dim=32"], "projection=linear"),
    ("divergence_unknown", ["distill_divergence=foo"], "distill_divergence"),
    ("teacher_weight_dtype_unknown", ["distill_teacher_weight_dtype=float16"], "distill_teacher_weight_dtype"),
    ("skew_lambda_without_a_skew_divergence", ["distill_skew_lambda=1.0"], "distill_skew_lambda"),
    ("skew_lambda_one", ["distill_divergence=skew_kl", "distill_skew_lambda=1.0"], "distill_skew_lambda"),
    ("jsd_beta_above_one", ["distill_divergence=jsd", "distill_divergence_beta=1.5"], "distill_divergence_beta"),
    ("vocab_mismatch", ["teacher_overrides.vocab_size=1024"], "vocab_size"),
    ("batch_shape_mismatch", ["teacher_overrides.per_device_batch_size=4"], "per_device_batch_size"),
    ("seq_len_mismatch", ["teacher_overrides.max_target_length=64"], "max_target_length"),
    ("unknown_key", ["distil_alpha=0.5"], "distil_alpha"),
    ("malformed_pair", ["steps"], "steps"),
    ("negative_steps", ["steps=-5"], "steps"),
    ("distill_key_in_student_overrides", ["student_overrides.distill_alpha=0.3"], "student_overrides.distill_alpha"),
    ("unknown_key_in_teacher_overrides", ["teacher_overrides.num_layerz=3"], "teacher_overrides.num_layerz"),
    ("offline_dir_missing", ["offline_data_dir=/nonexistent/cache"], "offline_data_dir"),
    ("offline_dir_not_a_cache", ["offline_data_dir=/etc"], "offline_data_dir"),
    ("teacher_checkpoint_missing", ["teacher_overrides.load_parameters_path=/nonexistent/items"], "load_parameters_path"),
    ("student_checkpoint_missing", ["load_parameters_path=/nonexistent/items"], "load_parameters_path"),
]


def _run_in_process(capsys, argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case_id,extra,needle", BAD_CLI, ids=[c[0] for c in BAD_CLI])
def test_bad_cli_value_exits_2_naming_the_key(case_id, extra, needle, tmp_path, capsys, teacher_checkpoint):
  del case_id
  out = tmp_path / "out"
  argv = ["train_distill", TINY_YAML, f"base_output_directory={out}", "run_name=r"]
  if not any(a.startswith("teacher_overrides.load_parameters_path") for a in extra):
    argv.append(f"teacher_overrides.load_parameters_path={teacher_checkpoint}")
  code, err = _run_in_process(capsys, argv + extra)
  assert code == 2
  assert needle in err and "Fix" in err, err[-2000:]
  assert not out.exists(), "nothing may be written before the error"


def test_missing_teacher_checkpoint_is_explained(tmp_path, capsys):
  code, err = _run_in_process(capsys, ["train_distill", TINY_YAML, f"base_output_directory={tmp_path / 'o'}"])
  assert code == 2 and "teacher_overrides.load_parameters_path" in err and "Fix" in err


def test_directory_that_is_not_a_checkpoint_is_refused(tmp_path, capsys):
  empty = tmp_path / "not_a_ckpt"
  empty.mkdir()
  code, err = _run_in_process(capsys, ["train_distill", TINY_YAML, f"teacher_overrides.load_parameters_path={empty}"])
  assert code == 2 and "_METADATA" in err


def test_unknown_config_file_is_refused(capsys):
  code, err = _run_in_process(capsys, ["train_distill", "no-such-config.yml"])
  assert code == 2 and "config file" in err


def test_bad_yaml_values_are_refused(tmp_path, capsys, teacher_checkpoint):
  bad = tmp_path / "bad.yml"
  bad.write_text(
      f"base_config: {TINY_YAML}\ndistill_beta: 1.0\ndistill_layer_indices: [0]\nscan_layers: False\n", encoding="utf-8"
  )
  code, err = _run_in_process(
      capsys, ["train_distill", str(bad), f"teacher_overrides.load_parameters_path={teacher_checkpoint}"]
  )
  assert code == 2 and "scan_layers" in err


@pytest.mark.parametrize(
    "extra,needle",
    [(["distill_alpha=2"], "distill_alpha"), (["distill_temperature_schedule=step"], "distill_temperature_schedule")],
)
def test_real_process_exits_2_and_writes_nothing(extra, needle, tmp_path, teacher_checkpoint):
  out = tmp_path / "out"
  proc = run_cli(
      TINY_YAML, f"base_output_directory={out}", f"teacher_overrides.load_parameters_path={teacher_checkpoint}", *extra
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert needle in proc.stderr
  assert not out.exists()


SHIPPED_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("distillation*.yml"))


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_each_shipped_config_builds_and_reports_the_plugin(name, tmp_path, teacher_checkpoint):
  proc = run_cli(
      name,
      "hardware=cpu",
      "skip_jax_distributed_system=True",
      "per_device_batch_size=1",
      "max_target_length=128",
      f"base_output_directory={tmp_path}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      "--dry-run",
  )
  assert "maxtext-distill" in proc.stderr and "is the trainer" in proc.stderr
  if "does not fit the teacher model" in proc.stderr:  # a full-size model: the tiny checkpoint is refused, last check
    assert proc.returncode == 2 and f"the teacher checkpoint {teacher_checkpoint} does not fit" in proc.stderr
    return
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "mode: online" in proc.stdout and "teacher:" in proc.stdout
