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

"""The on-policy study's pieces: function chats from stdlib sources, the demo tokenizer as a Hugging Face one, and
one tiny on-policy arm trained on them and scored by the study, against the trainer's own evals of the same batches.

Nothing here says which arm wins; two steps only show that the pipeline runs and its two code paths agree.
"""

import json
import math

import numpy as np
import pytest

from maxtext_distill_plugin.demo import data as demo_data
from tests.conftest import TINY_YAML
from tools.study import arms
from tools.study import function_data

SOURCE = '''import os


def plain(a, b=1):
    """Adds.

    Twice.
    """
    c = a + b
    return c


class K:
    async def method(self):
        """One line."""
        # a comment
        return 2

    def no_doc(self):
        return 3

    def only_doc(self):
        """Nothing after."""
'''


def test_split_functions_takes_signature_and_docstring_as_prompt_and_the_rest_as_body():
  assert function_data.split_functions(SOURCE) == [
      ('def plain(a, b=1):\n    """Adds.\n\n    Twice.\n    """\n', "    c = a + b\n    return c"),
      ('async def method(self):\n    """One line."""\n', "    # a comment\n    return 2"),
  ]
  assert not function_data.split_functions("def broken(:\n")
  assert function_data.first_line("    return x  \n    y") == "    return x"


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
  root = tmp_path_factory.mktemp("onpolicy")
  data = demo_data.prepare(str(root / "data"), 64, vocab_size=512, max_files=30)
  return data, function_data.prepare(str(root / "chats"), data, prompt_tokens=48, completion_tokens=16, max_files=30)


def test_chats_come_from_the_split_and_maxtexts_template_splits_them_at_the_body(chats):
  """MaxText's own SFT split of each chat gives <s> + prompt and body + </s>, and the Hugging Face tokenizer gives
  the demo SentencePiece ids of the text in the middle of a file (after a newline, where the teacher sees it)."""
  from maxtext.input_pipeline import input_pipeline_utils  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  data, fdata = chats
  corpus = demo_data.build_corpus(max_files=30)
  want = {
      split: [pair for p in paths for pair in function_data.split_functions(demo_data.read_source(corpus.root, p))]
      for split, paths in (("train", corpus.train), ("eval", corpus.held_out))
  }
  sp = demo_data.load_tokenizer(data.tokenizer_path)
  hf = transformers.AutoTokenizer.from_pretrained(fdata.tokenizer_dir, add_bos_token=False, add_eos_token=False)
  newline = sp.PieceToId("\n")
  for split, path in (("train", fdata.train_path), ("eval", fdata.eval_path)):
    with open(path, encoding="utf-8") as f:
      rows = [json.loads(line)["messages"] for line in f]
    assert rows and len(rows) == fdata.stats[f"{split}_chats"] <= fdata.stats[f"{split}_functions"]
    assert fdata.stats[f"{split}_functions"] == len(want[split])
    for messages in rows[:20]:
      user, assistant = messages[0]["content"], messages[1]["content"]
      assert (user, assistant) in want[split]
      example = input_pipeline_utils.apply_chat_template({"messages": messages}, hf, "messages")
      assert example["messages"] == ["<s>" + user, assistant + "</s>"] and example["is_prompt"] == [True, False]
      for text in (user, assistant):
        mid_file = sp.EncodeAsIds("\n" + text)
        mid_file = mid_file[mid_file.index(newline) + 1 :]
        assert hf.encode(text, add_special_tokens=False) == mid_file
        assert len(mid_file) + 1 <= (48 if text == user else 16)


def test_first_line_match_compares_decoded_first_lines():
  from tools.study import on_policy_scoring  # pylint: disable=import-outside-toplevel

  def decode(ids):
    return "".join(chr(ord("a") + int(i)) if i != 9 else "\n" for i in ids)

  tokens = np.array([[0, 1, 9, 2], [0, 2, 9, 1], [3, 3, 3, 3]])
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
  batch = {"targets": np.array([[0, 1, 9, 3], [0, 1, 9, 5], [0, 0, 0, 0]]), "targets_segmentation": np.ones((3, 4))}
  got = on_policy_scoring.first_line_matches(tokens, mask, batch, np.array([True, True, False]), decode)
  assert got == [True, False]


def test_arm_list_refuses_mixing_chat_and_record_arms():
  with pytest.raises(ValueError, match="mixes arms on function chats"):
    arms.select("onpolicy_1,logit_kd")
  assert [a.name for a in arms.select("onpolicy_off,onpolicy_1,onpolicy_0.5,seqkd")] == [
      "onpolicy_off",
      "onpolicy_1",
      "onpolicy_0.5",
      "seqkd",
  ]


@pytest.mark.slow  # trains and scores a tiny arm (about a minute): make test-slow
def test_a_tiny_on_policy_arm_trains_and_the_studys_scores_equal_the_trainers_evals(chats, tmp_path, teacher_checkpoint):
  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.training import on_policy  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel
  from tools.study import on_policy_scoring  # pylint: disable=import-outside-toplevel

  data, fdata = chats
  argv = [
      "study",
      TINY_YAML,
      "run_name=arm",
      f"base_output_directory={tmp_path}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      "steps=2",
      "eval_interval=2",
      "eval_steps=2",
      "max_target_length=64",
      "distill_sample_max_new_tokens=16",
      *fdata.maxtext_args(),
      *arms.ON_POLICY_COMMON,
      *arms.ON_POLICY_1.overrides,
  ]
  trained = trainer.train(config.build(argv))
  final_eval = [h for h in trained.history if on_policy.NLL_METRIC in h][-1]
  items = f"{trained.checkpoint_dir}/{trained.last_step}/items"
  cfgs = config.build(argv + [f"student_overrides.load_parameters_path={items}"])
  scorer = on_policy_scoring.FunctionScorer(cfgs, 2, data.tokenizer_path)
  scores = scorer.score(cfgs.student)
  # Two code paths, one checkpoint, the same first two eval batches: the trainer's last eval and the study's reload.
  assert abs(scores["ce"] - final_eval["eval/hard_loss"]) < 1e-4
  assert abs(scores["teacher_nll"] - final_eval[on_policy.NLL_METRIC]) < 1e-4
  assert 0.0 <= scores["first_line_match"] <= 1.0 and scores["prompts"] == 4
  assert 1.0 <= scores["completion_length"] <= 16
  teacher = scorer.score(None)
  assert math.isfinite(teacher["ce"]) and math.isfinite(teacher["teacher_nll"]) and teacher["prompts"] == 4
