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


"""Several teachers on-policy (``--slow``): the student's samples scored by the ensemble; two identical teachers at
(0.5, 0.5) train exactly like one, and the combinations not served are refused before any model is built."""

import json

import numpy as np
import pytest

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.training import trainer
from tests.conftest import TINY_YAML
from tests.integration import on_policy_test
from tests.integration.on_policy_test import sft_yaml  # pylint: disable=unused-import

_LOSSES = ("distill/total_loss", "distill/soft_loss", "distill/hard_loss", "distill/teacher_loss", "grad_norm")


def _multi_yaml(tmp_path, base_yaml: str, checkpoint: str, extra: str) -> str:
  """The SFT YAML with the tiny YAML's keys inlined and ``teachers:`` instead of its ``teacher_overrides``."""
  with open(base_yaml, encoding="utf-8") as f:
    sft = [line for line in f.read().splitlines() if line and not line.startswith("base_config:")]
  with open(TINY_YAML, encoding="utf-8") as f:
    tiny = f.read().replace("teacher_overrides:\n  base_num_decoder_layers: 2\n", "").splitlines()
  keys = {line.split(":")[0] for line in sft}
  kept = [line for line in tiny if line.split(":")[0] not in keys]
  entries = "".join(
      f"  - name: {name}\n    overrides:\n      base_num_decoder_layers: 2\n      load_parameters_path: {checkpoint}\n"
      for name in ("math", "code")
  )
  path = tmp_path / "multi.yml"
  path.write_text("\n".join(kept + sft) + f"\nteachers:\n{entries}{extra}")
  return str(path)


def _argv(yaml_path, out, *extra):
  return ["train_distill", yaml_path, "run_name=run", f"base_output_directory={out}", *extra]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,match",
    [
        pytest.param("distill_teacher_generated: true\n", "distill_teacher_generated", id="teacher_samples"),
    ],
)
def test_on_policy_combinations_not_served_are_refused(tmp_path, sft_yaml, extra, match):  # pylint: disable=redefined-outer-name
  checkpoint = tmp_path / "ckpt"
  checkpoint.mkdir()
  (checkpoint / "_METADATA").write_text("")
  yaml_path = _multi_yaml(tmp_path, sft_yaml, str(checkpoint), extra)
  with pytest.raises(ValueError, match=match):
    config.build(_argv(yaml_path, tmp_path, *on_policy_test._ON_POLICY))  # pylint: disable=protected-access


@pytest.mark.slow
def test_two_identical_teachers_on_policy_train_like_one(tmp_path, sft_yaml, teacher_checkpoint):  # pylint: disable=redefined-outer-name
  common = (*on_policy_test._ON_POLICY, "steps=2", "eval_interval=-1")  # pylint: disable=protected-access
  yaml_path = _multi_yaml(
      tmp_path,
      sft_yaml,
      teacher_checkpoint,
      "distill_teacher_mixture: loss\ndistill_teacher_weights: {math: 0.5, code: 0.5}\n",
  )
  two = trainer.train(config.build(_argv(yaml_path, tmp_path / "two", *common))).history
  one = on_policy_test._train(sft_yaml, tmp_path / "one", teacher_checkpoint, *common).history  # pylint: disable=protected-access
  two, one = on_policy_test._by_step(two), on_policy_test._by_step(one)  # pylint: disable=protected-access
  assert sorted(two) == sorted(one) == [1, 2]
  for step, h in one.items():
    assert "sample/teacher_nll" in h  # the weighted mean of the teachers' NLLs of the samples: here one teacher's
    for name in (*_LOSSES, "sample/teacher_nll"):
      np.testing.assert_allclose(two[step][name], h[name], rtol=1e-5, err_msg=f"{name} at step {step}")
    assert two[step]["distill/teacher/math/token_fraction"] == 1.0


@pytest.mark.slow
def test_routing_every_prompt_to_one_teacher_on_policy_equals_that_teacher_alone(
    tmp_path, sft_yaml, teacher_checkpoint  # pylint: disable=redefined-outer-name
):
  """The prompts come from the routed source (the prompt's own column), the student completes them in place, and the
  routed step scores each completion by its prompt's teacher: every prompt on ``math`` is a one-teacher run."""
  with open(sft_yaml, encoding="utf-8") as f:
    train = next(line.split('"')[1] for line in f if line.startswith("hf_train_files:"))
  routed_rows = tmp_path / "routed.jsonl"
  with open(train, encoding="utf-8") as f, open(routed_rows, "w", encoding="utf-8") as out:
    for line in f:
      out.write(json.dumps({**json.loads(line), "teacher_id": "math"}) + "\n")
  common = (*on_policy_test._ON_POLICY, "steps=2", "eval_interval=-1", f"hf_train_files={routed_rows}")  # pylint: disable=protected-access
  yaml_path = _multi_yaml(tmp_path, sft_yaml, teacher_checkpoint, "distill_teacher_mixture: route\n")
  routed = on_policy_test._by_step(trainer.train(config.build(_argv(yaml_path, tmp_path / "routed", *common))).history)  # pylint: disable=protected-access
  one = on_policy_test._train(sft_yaml, tmp_path / "one", teacher_checkpoint, *common).history  # pylint: disable=protected-access
  one = on_policy_test._by_step(one)  # pylint: disable=protected-access
  assert sorted(routed) == sorted(one) == [1, 2]
  for step, h in one.items():
    for name in (*_LOSSES, "sample/teacher_nll"):
      np.testing.assert_allclose(routed[step][name], h[name], rtol=1e-5, err_msg=f"{name} at step {step}")
