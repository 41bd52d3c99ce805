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

"""Upstream's student keys on real runs: ``student_params_to_update`` (checked on the saved checkpoints, across a
resume), ``distill_weights_copy_map``, and the refusals (exit 2) of what cannot run."""

import math

import jax
import numpy as np
from orbax.checkpoint import v1 as ocp
import pytest
import yaml

from maxtext_distill_plugin import cli
from maxtext_distill_plugin.student import pruning
from maxtext_distill_plugin.training import run_record
from tests.conftest import TINY_YAML, read_metrics, train_in_process

# The student starts as the 2-layer teacher; only its attention and final norm may move.
_TRAINED = ("decoder/layers/self_attention/", "decoder_norm")
_FREEZE = [
    "student_overrides.base_num_decoder_layers=2",
    f'student_params_to_update=["{_TRAINED[0]}","{_TRAINED[1]}"]',
    "checkpoint_period=1",
    "log_period=1",
]


def _flat(tree) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v) for p, v in leaves}


def _items_params(items_dir) -> dict[str, np.ndarray]:
  flat = _flat(pruning.read_params(str(items_dir)))
  return {k.removeprefix("params/"): v for k, v in flat.items()}


def _checkpoint_params(run_dir, step) -> dict[str, np.ndarray]:
  return _items_params(run_dir / "checkpoints" / str(step) / "items")


def _trained(path: str) -> bool:
  return any(t in path for t in _TRAINED)


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, teacher_checkpoint):
  """Two steps, then the same command with steps=4 (a resume from the masked optimizer state)."""
  out = tmp_path_factory.mktemp("frozen")
  common = [*_FREEZE, f"student_overrides.load_parameters_path={teacher_checkpoint}", f"metrics_file={out / 'm.jsonl'}"]
  train_in_process(out, teacher_checkpoint, *common, "steps=2", run_name="r")
  result = train_in_process(out, teacher_checkpoint, *common, "steps=4", run_name="r")
  return out / "r", result


def test_frozen_parameters_stay_bit_identical_on_the_checkpoints_and_the_rest_train(frozen_run, teacher_checkpoint):
  run_dir, result = frozen_run
  assert result.last_step == 3
  start = _items_params(teacher_checkpoint)
  for step in (0, 1, 3):  # first run's checkpoints, then the resumed run's last
    saved = _checkpoint_params(run_dir, step)
    assert sorted(saved) == sorted(start)
    for path, value in saved.items():
      if _trained(path):
        assert not np.array_equal(value, start[path]), f"{path} did not train by step {step}"
      else:
        assert value.dtype == start[path].dtype and value.tobytes() == start[path].tobytes(), f"{path} moved"
  assert sum(map(_trained, start)) == 5 and len(start) == 12  # 4 attention kernels + the final norm of 12 arrays


def test_frozen_parameters_have_no_optimizer_state(frozen_run):
  run_dir, _ = frozen_run
  stored = ocp.metadata(str(run_dir / "checkpoints" / "3"), checkpointable_name="items").metadata
  moments = [p for p in _flat_shapes(stored["opt_state"]) if "/mu/" in p or "/nu/" in p]
  assert moments and all(_trained(p) for p in moments), moments
  assert {p.split("/mu/")[1] for p in moments if "/mu/" in p} == {
      p for p in _flat_shapes(stored["params"]) if _trained(p)
  }


def _flat_shapes(tree) -> list[str]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [jax.tree_util.keystr(p, simple=True, separator="/").removeprefix("params/") for p, _ in leaves]


def test_logged_counts_teacher_perplexity_and_run_record(frozen_run):
  run_dir, result = frozen_run
  params = _checkpoint_params(run_dir, 3)
  trainable = sum(v.size for p, v in params.items() if _trained(p))
  records = [r for r in read_metrics(run_dir.parent / "m.jsonl") if "distill/total_loss" in r]
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  for r in records:
    assert r["params/trainable"] == trainable and r["params/total"] == sum(v.size for v in params.values())
    assert math.isclose(r["distill/teacher_perplexity"], math.exp(r["distill/teacher_loss"]), rel_tol=1e-12)
  assert result.history[-1]["params/trainable"] == trainable
  saved = yaml.safe_load((run_dir / run_record.CONFIG_FILE).read_text())
  assert saved["steps"] == 4 and saved["base_num_decoder_layers"] == 2 and saved["run_name"] == "r"
  assert saved["student_params_to_update"] == list(_TRAINED)
  teacher = yaml.safe_load((run_dir / run_record.TEACHER_CONFIG_FILE).read_text())
  assert teacher["load_parameters_path"] != saved["load_parameters_path"] or teacher["base_num_decoder_layers"] == 2
  command = (run_dir / run_record.COMMAND_FILE).read_text()
  assert "steps=4" in command and "student_params_to_update=" in command and TINY_YAML in command


def test_copy_map_puts_the_teacher_weights_into_a_fresh_student(tmp_path, teacher_checkpoint):
  copied = ("token_embedder/embedding", "decoder/logits_dense/kernel")
  copy_map = "{" + ",".join(f"'{p}':'{p}'" for p in copied) + "}"
  train_in_process(
      tmp_path, teacher_checkpoint, f"distill_weights_copy_map={copy_map}", 'student_params_to_update=["mlp"]', "steps=2"
  )
  teacher = _items_params(teacher_checkpoint)
  student = _checkpoint_params(tmp_path / "run", 1)
  for path in copied:  # copied at init and frozen since: exactly the teacher's bytes
    assert student[path].tobytes() == teacher[path].tobytes()
  assert student["decoder/layers/mlp/wo/kernel"].shape[1] == 1  # the 1-layer student's own, trained


def _main(capsys, argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  return exit_info.value.code, capsys.readouterr().err


BAD = [
    ("template_matches_nothing", ['student_params_to_update=["self_atention/"]'], "self_atention/"),
    ("template_not_a_regex", ['student_params_to_update=["mlp/(wi"]'], "student_params_to_update"),
    ("both_masks", ['student_params_to_update=["mlp"]', "trainable_parameters_mask=[mlp]"], "parameters_mask"),
    ("learn_to_init", ["learn_to_init_mode=True"], "learn_to_init_mode"),
    ("lti_layers", ["lti_layer_indices=[0]"], "lti_layer_indices"),
    ("share_map", ["distill_student_weights_share_map={'a':'b'}"], "distill_student_weights_share_map"),
    ("copy_map_matches_nothing", ["distill_weights_copy_map={'decoder/none':'decoder/none'}"], "decoder/none"),
    (
        "copy_map_shape",
        ["distill_weights_copy_map={'decoder/layers/mlp/wo/kernel':'decoder/layers/mlp/wo/kernel'}"],
        "shape",
    ),
    ("copy_map_missing_target", ["distill_weights_copy_map={'token_embedder/(.*)':'decoder/\\1'}"], "does not have"),
    ("freezing_in_teacher_overrides", ["teacher_overrides.student_params_to_update=[mlp]"], "teacher_overrides"),
]


@pytest.mark.parametrize("case_id,extra,needle", BAD, ids=[c[0] for c in BAD])
def test_unsupported_or_bad_student_keys_exit_2(case_id, extra, needle, tmp_path, capsys, teacher_checkpoint):
  del case_id
  out = tmp_path / "out"
  argv = ["train_distill", TINY_YAML, f"base_output_directory={out}", "run_name=r"]
  code, err = _main(capsys, argv + [f"teacher_overrides.load_parameters_path={teacher_checkpoint}", *extra])
  assert code == 2, err[-2000:]
  assert needle in err and "Fix" in err, err[-2000:]
  assert not out.exists()
