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

"""SFT data that MaxText would reject after building the models is refused first, with a command that converts it.

MaxText's SFT pipeline (``use_sft``) takes conversational columns only: lists of ``{"role", "content"}`` turns, as a
``messages`` column or as ``prompt``/``completion``. Plain-string ``prompt``/``completion`` JSON lines ended in
``AssertionError: Dataset is not in conversational format.`` (exit 1) once both models were built.
"""

import json
import os
import subprocess
import sys

import pytest

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration import checkpoint_paths, config
from tests.conftest import TINY_YAML
from tests.integration import data_testing


def _write_jsonl(path, rows) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def _build(tmp_path, train_file: str, columns: str):
  texts = data_testing.sentences(8)
  tokenizer = data_testing.train_hf_tokenizer(str(tmp_path / "tokenizer"), texts + ["user assistant"])
  yaml = tmp_path / "sft.yml"
  yaml.write_text(
      "\n".join([
          f'base_config: "{TINY_YAML}"',
          "dataset_type: hf",
          "hf_path: json",
          f'hf_train_files: "{train_file}"',
          f'tokenizer_path: "{tokenizer}"',
          "use_sft: true",
          f"train_data_columns: {columns}",
          f'chat_template: "{data_testing.CHAT_TEMPLATE}"',  # YAML: the CLI would parse "{%" as a mapping
      ])
      + "\n"
  )
  return config.build(["t", str(yaml), f"base_output_directory={tmp_path}", "teacher_overrides.load_parameters_path=x"])


def test_plain_prompt_completion_is_refused_and_the_named_command_converts_it(tmp_path, monkeypatch):
  monkeypatch.setattr(checkpoint_paths, "check_path", lambda key, path, plan=False: None)  # no model is built here
  chats = data_testing.chats(4)
  plain = _write_jsonl(tmp_path / "train.jsonl", [{"prompt": u["content"], "completion": a["content"]} for u, a in chats])
  with pytest.raises(errors.ConfigError) as refusal:
    _build(tmp_path, plain, '["prompt", "completion"]')
  assert refusal.value.key == "hf_train_files" and "not in conversational format" in refusal.value.fix
  command = next(line.strip() for line in refusal.value.fix.splitlines() if line.strip().startswith("python -c"))
  converted = str(tmp_path / "train-messages.jsonl")
  assert f"hf_train_files={converted} train_data_columns=['messages']" in refusal.value.fix
  env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}  # `python` is this one
  subprocess.run(["bash", "-c", command], check=True, env=env, timeout=60)
  with open(converted, encoding="utf-8") as f:
    assert [json.loads(line)["messages"] for line in f] == chats
  assert _build(tmp_path, converted, '["messages"]').student.use_sft


def test_conversational_prompt_completion_passes_and_other_plain_columns_are_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(checkpoint_paths, "check_path", lambda key, path, plan=False: None)
  chats = data_testing.chats(2)
  turns = _write_jsonl(tmp_path / "turns.jsonl", [{"prompt": [u], "completion": [a]} for u, a in chats])
  assert _build(tmp_path, turns, '["prompt", "completion"]').student.use_sft
  text = _write_jsonl(tmp_path / "text.jsonl", [{"text": u["content"]} for u, _ in chats])
  with pytest.raises(errors.ConfigError) as refusal:
    _build(tmp_path, text, '["text"]')
  assert refusal.value.key == "train_data_columns" and "'messages'" in refusal.value.fix
