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


"""Several teachers through the real config and trainer: the teachers: list, its refusals before any model is built,
and a tiny run whose per-teacher metrics are checked against each other and against a one-teacher run."""

import os

import numpy as np
import pytest

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.training import trainer
from tests.conftest import TINY_YAML, train_in_process

_SINGLE_TEACHER = "teacher_overrides:\n  base_num_decoder_layers: 2\n"


def _yaml(tmp_path, checkpoint: str, extra: str = "", names=("math", "code"), keep_teacher_overrides=False) -> str:
  """The tiny YAML with ``teachers:`` (every teacher on ``checkpoint``) instead of ``teacher_overrides``."""
  with open(TINY_YAML, encoding="utf-8") as f:
    text = f.read()
  assert _SINGLE_TEACHER in text
  if not keep_teacher_overrides:
    text = text.replace(_SINGLE_TEACHER, "")
  entries = "".join(
      f"  - name: {name}\n    overrides:\n      base_num_decoder_layers: 2\n      load_parameters_path: {checkpoint}\n"
      for name in names
  )
  path = os.path.join(tmp_path, "multi.yml")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text + "teachers:\n" + entries + extra)
  return path


def _argv(tmp_path, yaml_path, *extra):
  return ["train_distill", yaml_path, "run_name=multi", f"base_output_directory={tmp_path}", *extra]


def _fake_checkpoint(tmp_path) -> str:
  path = os.path.join(tmp_path, "ckpt")
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "_METADATA"), "w", encoding="utf-8"):
    pass
  return path


# (case id, YAML lines or CLI arguments, the key the error names)
REFUSED = [
    ("both_teacher_keys", {"keep_teacher_overrides": True}, (), "teachers"),
    (
        "weights_unknown_name",
        {"extra": "distill_teacher_weights: {math: 0.5, poetry: 0.5}\n"},
        (),
        "distill_teacher_weights",
    ),
    (
        "weights_not_summing_to_one",
        {"extra": "distill_teacher_weights: {math: 0.5, code: 0.6}\n"},
        (),
        "distill_teacher_weights",
    ),
    ("weights_negative", {"extra": "distill_teacher_weights: {math: 1.5, code: -0.5}\n"}, (), "distill_teacher_weights"),
    ("weights_missing_a_teacher", {"extra": "distill_teacher_weights: {math: 1.0}\n"}, (), "distill_teacher_weights"),
    ("one_teacher_listed", {"names": ("math",)}, (), "teachers"),
    ("names_repeated", {"names": ("math", "math")}, (), "teachers"),
    ("route_without_local_rows", {}, ("distill_teacher_mixture=route",), "distill_teacher_mixture"),
    ("feature_loss", {}, ("distill_beta=0.5", "distill_layer_indices=[0]"), "teachers"),
    ("vocab_mismatch", {"extra": ""}, ("vocab_size=1024",), "vocab_size"),
]


@pytest.mark.parametrize("case,yaml_options,cli,key", REFUSED, ids=[c[0] for c in REFUSED])
def test_bad_teacher_lists_are_refused_before_any_model_is_built(tmp_path, case, yaml_options, cli, key):
  checkpoint = _fake_checkpoint(tmp_path)
  if case == "vocab_mismatch":  # one teacher with another vocabulary: the overrides of the second entry differ
    path = _yaml(tmp_path, checkpoint)
    with open(path, encoding="utf-8") as f:
      text = f.read().replace(
          "  - name: code\n    overrides:\n", "  - name: code\n    overrides:\n      vocab_size: 1024\n"
      )
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    cli = ()
  else:
    path = _yaml(tmp_path, checkpoint, **yaml_options)
  with pytest.raises(ValueError, match=key):
    config.build(_argv(tmp_path, path, *cli))


def test_mixture_keys_without_several_teachers_are_refused(tmp_path):
  with pytest.raises(ValueError, match="distill_teacher_mixture"):
    config.build([
        "train_distill",
        TINY_YAML,
        f"teacher_overrides.load_parameters_path={_fake_checkpoint(tmp_path)}",
        "distill_teacher_mixture=loss",
    ])


@pytest.mark.parametrize("teachers", (1, 2), ids=("one-teacher", "mixed-teachers"))
def test_a_route_column_without_routing_is_refused(tmp_path, teachers):
  """The column is read only by distill_teacher_mixture=route: elsewhere it would be ignored."""
  argv = ["train_distill", TINY_YAML, f"teacher_overrides.load_parameters_path={_fake_checkpoint(tmp_path)}"]
  if teachers == 2:
    argv = _argv(tmp_path, _yaml(tmp_path, _fake_checkpoint(tmp_path), "distill_teacher_mixture: loss\n"))
  with pytest.raises(ValueError, match="distill_teacher_route_column"):
    config.build([*argv, "distill_teacher_route_column=domain"])


def _by_step(history):
  return {h["step"]: h for h in history if "distill/total_loss" in h}


def _two_identical_teachers(tmp_path, checkpoint):
  yaml_path = _yaml(
      tmp_path, checkpoint, "distill_teacher_mixture: loss\ndistill_teacher_weights: {math: 0.5, code: 0.5}\n"
  )
  return _by_step(trainer.train(config.build(_argv(tmp_path / "multi", yaml_path, "steps=2"))).history)


def test_two_identical_teachers_log_the_same_per_teacher_metrics(tmp_path, teacher_checkpoint):
  logged = _two_identical_teachers(tmp_path, teacher_checkpoint)
  assert sorted(logged) == [1, 2]
  for h in logged.values():
    for name in ("math", "code"):
      prefix = f"distill/teacher/{name}/"
      np.testing.assert_allclose(h[prefix + "soft_loss"], h["distill/soft_loss"], rtol=1e-6)
      np.testing.assert_allclose(h[prefix + "teacher_nll"], h["distill/teacher_loss"], rtol=1e-6)
      assert h[prefix + "token_fraction"] == 1.0


@pytest.mark.slow
def test_two_identical_teachers_at_half_train_like_one_teacher(tmp_path, teacher_checkpoint):
  two = _two_identical_teachers(tmp_path, teacher_checkpoint)
  one = _by_step(train_in_process(tmp_path / "one", teacher_checkpoint, "steps=2").history)
  for step, h in one.items():
    for name in ("distill/total_loss", "distill/soft_loss", "distill/hard_loss", "distill/teacher_loss", "grad_norm"):
      np.testing.assert_allclose(two[step][name], h[name], rtol=1e-5, err_msg=f"{name} at step {step}")
