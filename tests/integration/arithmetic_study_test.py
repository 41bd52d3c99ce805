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

"""The addition study's pieces: its chats against Python's arithmetic, its tokenizer through MaxText's own chat
template, its exact-match scorer and summary against hand computations, its uniform teacher, its command line's
refusals; and (slow) the whole ``--quick`` study."""

import json
import math
import types

import numpy as np
import pytest

from tools.study import arithmetic_arms
from tools.study import arithmetic_cli
from tools.study import arithmetic_data
from tools.study import arithmetic_report


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
  return arithmetic_data.prepare(str(tmp_path_factory.mktemp("arith")), digits=2, train_size=600, eval_size=200)


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line)["messages"] for line in f]


def test_chats_are_correct_sums_and_the_held_out_problems_never_appear_in_training(chats):
  train, held_out = _rows(chats.train_path), _rows(chats.eval_path)
  assert len(train) == 600 and len(held_out) == 200
  pairs = {}
  for split, rows in (("train", train), ("eval", held_out)):
    pairs[split] = []
    for user, assistant in rows:
      assert user["role"] == "user" and assistant["role"] == "assistant"
      left, right = user["content"].removesuffix("=").split("+")
      assert user["content"].endswith("=") and 0 <= int(left) < 100 and 0 <= int(right) < 100
      assert int(assistant["content"]) == int(left) + int(right) and assistant["content"] == str(
          int(assistant["content"])
      )
      pairs[split].append((int(left), int(right)))
    assert len(set(pairs[split])) == len(pairs[split])  # no repeats within a split either
  assert not set(pairs["train"]) & set(pairs["eval"])
  with pytest.raises(ValueError, match="too many"):
    arithmetic_data.problems(1, 91, np.random.default_rng(0))


def test_maxtexts_chat_template_gives_bos_prompt_answer_eos_one_token_per_character(chats):
  from maxtext.input_pipeline import input_pipeline_utils  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  hf = transformers.AutoTokenizer.from_pretrained(chats.tokenizer_dir, add_bos_token=False, add_eos_token=False)
  messages = arithmetic_data.chat(47, 85)
  example = input_pipeline_utils.apply_chat_template({"messages": messages}, hf, "messages")
  assert example["messages"] == ["<s>47+85=", "132</s>"] and example["is_prompt"] == [True, False]
  assert hf.encode("<s>47+85=", add_special_tokens=False) == [1, 8, 11, 14, 12, 9, 15]
  assert (
      hf.encode("132</s>", add_special_tokens=False)
      == [5, 7, 6, arithmetic_data.EOS_ID]
      == [
          *arithmetic_data.encode("132"),
          2,
      ]
  )
  assert hf.eos_token_id == arithmetic_data.EOS_ID and hf.pad_token_id == 0 and len(hf) == 16


def test_exact_match_needs_every_answer_token_and_the_eos():
  # Row 0: "12" + EOS, right. Row 1: stops early (no EOS). Row 2: an extra digit. Row 3: right but not scored.
  eos = arithmetic_data.EOS_ID
  tokens = np.array([[1, 5, 6, eos, 0], [1, 5, 6, 0, 0], [1, 5, 6, 6, eos], [1, 5, 6, eos, 0]])
  mask = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 1], [0, 1, 1, 1, 0]], bool)
  targets = np.array([[5, 6, eos, 0, 0]] * 4)
  segmentation = np.array([[1, 1, 1, 0, 0]] * 4)
  got = arithmetic_data.exact_matches(
      tokens, mask, {"targets": targets, "targets_segmentation": segmentation}, np.array([True, True, True, False])
  )
  assert got == [True, False, False]


def test_summary_means_sample_std_and_gap_closed_by_hand():
  runs = [
      {"arm": "sft", "seed": s, "train_seconds": t, "sampled_steps": 0, "scores": {"exact_match": em, **_rest()}}
      for s, (em, t) in enumerate(((0.3, 10.0), (0.5, 20.0)))
  ]
  reference = {"pruned": {"exact_match": 0.1}, "teacher": {"exact_match": 0.9}}
  summary = arithmetic_report.summarize(runs, reference)["sft"]
  assert summary["exact_match"]["mean"] == pytest.approx(0.4)
  assert summary["exact_match"]["std"] == pytest.approx(math.sqrt(0.02))  # ((0.1^2 + 0.1^2) / (2 - 1)) ** 0.5
  assert summary["gap_closed"]["mean"] == pytest.approx(0.375)  # (0.4 - 0.1) / (0.9 - 0.1)
  assert summary["train_seconds"]["mean"] == 15.0 and summary["seeds"] == 2
  assert math.isnan(arithmetic_report.gap_closed(0.5, 0.2, 0.2))


def _rest():
  return {"teacher_nll": 0.1, "ce": 0.2, "completion_length": 3.0}


def test_the_uniform_teachers_unembedding_is_zero_and_everything_else_the_teachers(teacher_checkpoint, tmp_path):
  from maxtext_distill_plugin.student import pruning  # pylint: disable=import-outside-toplevel
  from tools.study import arithmetic_inputs  # pylint: disable=import-outside-toplevel

  uniform = arithmetic_inputs.write_uniform_teacher(teacher_checkpoint, str(tmp_path / "uniform" / "0" / "items"))
  source, written = pruning.read_params(teacher_checkpoint), pruning.read_params(uniform)
  kernel = written["params"]["decoder"]["logits_dense"]["kernel"]
  assert kernel.shape == source["params"]["decoder"]["logits_dense"]["kernel"].shape and not np.any(kernel)
  written["params"]["decoder"].pop("logits_dense")
  source["params"]["decoder"].pop("logits_dense")
  flat = lambda tree: {k: np.asarray(v) for k, v in _leaves(tree)}  # pylint: disable=unnecessary-lambda-assignment
  want, got = flat(source), flat(written)
  assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)


def _leaves(tree, prefix=""):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _leaves(value, f"{prefix}/{key}")
  else:
    yield prefix, tree


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arms", "sft,nope"], "unknown arm"),
        (["--arms", "sft,sft"], "repeated"),
        (["--steps", "0"], "--steps=0"),
        (["--digits", "3"], "--digits=3"),
    ],
)
def test_the_command_line_refuses_bad_flags_with_exit_2(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    arithmetic_cli.parse_args(argv)
  assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_every_arm_trains_the_same_student_and_only_the_control_has_the_uniform_teacher():
  assert [a.name for a in arithmetic_arms.ARMS] == [
      "sft",
      "seqkd",
      "offpolicy_kd",
      "onpolicy_1",
      "onpolicy_0.5",
      "control_uniform",
      "sft_then_onpolicy",
  ]
  assert [a.name for a in arithmetic_arms.ARMS if a.uniform_teacher] == ["control_uniform"]
  assert arithmetic_arms.CONTROL.overrides == arithmetic_arms.ON_POLICY_1.overrides
  assert arithmetic_arms.SFT_THEN_ON_POLICY.overrides == arithmetic_arms.ON_POLICY_1.overrides
  assert [a.after for a in arithmetic_arms.ARMS if a.after] == ["sft"]


def test_the_two_stage_arm_takes_the_steps_its_first_stage_left():
  from tools.study import arithmetic_study  # pylint: disable=import-outside-toplevel

  plan = arithmetic_cli.plan_from_args(arithmetic_cli.parse_args([]))
  period = plan.steps // plan.curve_points  # MaxText saves at step indices 0, period, 2 * period, ... and the last
  first = arithmetic_study.first_stage_steps(plan)
  assert (plan.steps, plan.curve_points, first) == (150, 3, 101)  # the checkpoint at step index 100 holds 101 steps
  assert first == (plan.curve_points - 1) * period + 1
  quick = arithmetic_cli.plan_from_args(arithmetic_cli.parse_args(["--quick"]))
  assert 0 < arithmetic_study.first_stage_steps(quick) < quick.steps  # the second stage has steps left to run
  inputs = types.SimpleNamespace(
      uniform_items="/u", teacher_items="/t", data=types.SimpleNamespace(maxtext_args=lambda: [])
  )
  staged = arithmetic_study.arm_argv(arithmetic_arms.SFT_THEN_ON_POLICY, inputs, "/r/x", plan, 0, "/sft/100/items")
  plain = arithmetic_study.arm_argv(arithmetic_arms.ON_POLICY_1, inputs, "/r/x", plan, 0, "/pruned")
  assert f"steps={plan.steps - first}" in staged and f"steps={plan.steps}" in plain
  assert "student_overrides.load_parameters_path=/sft/100/items" in staged


@pytest.mark.slow  # trains a teacher and seven tiny arms, and scores them (several minutes): make test-slow
def test_the_quick_study_trains_and_scores_every_arm(tmp_path):
  from tools.study import arithmetic_study  # pylint: disable=import-outside-toplevel

  plan = arithmetic_cli.plan_from_args(arithmetic_cli.parse_args(["--quick"]))
  results = arithmetic_study.run(str(tmp_path), plan, None)
  assert list(results["arms"]) == [a.name for a in arithmetic_arms.ARMS]
  assert results["eval_prompts"] == plan.eval_size
  for run in results["runs"]:
    assert run["steps"] == plan.steps and run["curve"]["step"][-1] == plan.steps
    assert 0.0 <= run["scores"]["exact_match"] <= 1.0 and math.isfinite(run["scores"]["teacher_nll"])
    arm = arithmetic_arms.BY_NAME[run["arm"]]
    # The sampled arms' steps are on-policy per their lambda; the others never sample.
    assert (run["sampled_steps"] > 0) == (arm.samples and arm.name != "onpolicy_0.5") or arm.name == "onpolicy_0.5"
  table = arithmetic_report.markdown_report(results)
  assert table.count("\n| ") == 2 + len(arithmetic_arms.ARMS) + 1  # header, references, arms
  assert results["plots"] and all(p.endswith(".png") for p in results["plots"])


def test_sampled_steps_weigh_each_logged_windows_share_by_its_length():
  from tools.study import arithmetic_study  # pylint: disable=import-outside-toplevel

  metrics = [
      {"step": 7, "distill/on_policy_step": 3 / 7},
      {"step": 9, "other": 1.0},  # an eval record: no window
      {"step": 14, "distill/on_policy_step": 1.0},
      {"step": 16, "distill/on_policy_step": 0.5},
  ]
  assert arithmetic_study.sampled_steps(metrics) == pytest.approx(3 + 7 + 1)
