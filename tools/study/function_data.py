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

"""SFT chats from the demo's standard-library split: a function's signature and docstring as the prompt, its body
as the completion, for MaxText's Hugging Face pipeline on local JSON-lines files (the on-policy study arms).

* Functions: every ``def`` / ``async def`` (methods and nested functions included) whose body starts with a
  docstring and has at least one statement after it, found with :mod:`ast`. The prompt is the source from the
  ``def`` line through the docstring's last line, the completion the remaining lines of the function, both
  dedented by the ``def``'s indentation and kept byte for byte otherwise (whitespace included).
* Lengths: a chat is kept when the prompt (with BOS) fits ``prompt_tokens`` and the body (with EOS)
  ``completion_tokens`` in the demo tokenizer, so that greedy decoding can reach the whole reference body.
* Tokenizer: MaxText's SFT pipeline tokenizes with ``transformers.AutoTokenizer``, so the demo's SentencePiece
  model is rewritten as a Hugging Face fast tokenizer with the same pieces and ids (BPE vocabulary and merges from
  the model, the newline piece as an added token, ``<s>``/``</s>``/``<pad>`` special), saved locally with the chat
  template :data:`CHAT_TEMPLATE`: ``<s>`` + prompt, then body + ``</s>``, i.e. the function as it appears in a
  source file, which is what the teacher was pre-trained on. Nothing is downloaded.
"""

import ast
import dataclasses
import importlib
import json
import os

from maxtext_distill_plugin.demo import data as demo_data

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<s>' + message['content'] }}"
    "{% else %}{{ message['content'] + '</s>' }}{% endif %}{% endfor %}"
)


@dataclasses.dataclass(frozen=True)
class FunctionData:
  """What :func:`prepare` made."""

  tokenizer_dir: str
  train_path: str
  eval_path: str
  stats: dict

  def maxtext_args(self) -> list[str]:
    """``key=value`` arguments that make MaxText's HF pipeline read these chats with completion-only masks."""
    return [
        "dataset_type=hf",
        "hf_path=json",
        f"hf_train_files={self.train_path}",
        f"hf_eval_files={self.eval_path}",
        "train_data_columns=['messages']",
        "eval_data_columns=['messages']",
        "tokenize_train_data=True",
        "tokenize_eval_data=True",
        "tokenizer_type=huggingface",
        f"tokenizer_path={self.tokenizer_dir}",
        "use_sft=True",
        "sft_train_on_completion_only=True",
        "packing=False",
        "grain_worker_count=0",
    ]


def _dedent(lines: list[str], indent: int) -> str:
  return "".join(line[indent:] if line[:indent].strip() == "" else line for line in lines)


def split_functions(source: str) -> list[tuple[str, str]]:
  """``(prompt, body)`` of every function of ``source`` with a docstring and a statement after it, in source order.

  The prompt ends with the docstring's line (newline included); the body is the rest of the function without
  trailing newlines. A source that does not parse gives no functions.
  """
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return []
  lines = source.splitlines(keepends=True)
  found = []
  for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
      continue
    doc = node.body[0]
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
      continue
    first_statement = node.body[1].lineno
    if first_statement <= doc.end_lineno:  # the body continues on the docstring's line (``"""doc"""; x = 1``)
      continue
    prompt = _dedent(lines[node.lineno - 1 : doc.end_lineno], node.col_offset)
    body = _dedent(lines[doc.end_lineno : node.end_lineno], node.col_offset).rstrip("\n")
    if body.split("\n", 1)[0].strip() and prompt.endswith("\n"):
      found.append((prompt, body))
  return found


def first_line(text: str) -> str:
  """The first line of a completion, trailing whitespace removed (the study's exact-match unit)."""
  return text.split("\n", 1)[0].rstrip()


def write_hf_tokenizer(sentencepiece_model: str, directory: str) -> str:
  """Saves the SentencePiece BPE ``sentencepiece_model`` as a Hugging Face fast tokenizer in ``directory``."""
  from tokenizers import decoders, models, pre_tokenizers, Tokenizer  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  # The module, not transformers' same-named function that shadows it as an attribute of the package.
  converters = importlib.import_module("transformers.convert_slow_tokenizer")
  extracted = converters.SentencePieceExtractor(sentencepiece_model).extract(models.BPE)
  tokenizer = Tokenizer(
      models.BPE(extracted["vocab"], extracted["merges"], unk_token="<unk>", fuse_unk=True, byte_fallback=False)
  )
  # No dummy prefix, either way: a function sits mid-file, where the demo's encoding of a whole file adds none, and
  # MaxText re-tokenizes decoded prompt and completion strings, so decoding must keep a completion's leading spaces.
  tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)
  tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)
  tokenizer.add_tokens(extracted["additional_special_tokens"])
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
  )
  fast.chat_template = CHAT_TEMPLATE
  os.makedirs(directory, exist_ok=True)
  fast.save_pretrained(directory)
  return directory


def _chats(tokenizer, root: str, paths, prompt_tokens: int, completion_tokens: int) -> tuple[list, int]:
  kept, seen = [], 0
  for rel_path in paths:
    for prompt, body in split_functions(demo_data.read_source(root, rel_path)):
      seen += 1
      if len(tokenizer.EncodeAsIds(prompt)) + 1 <= prompt_tokens and len(tokenizer.EncodeAsIds(body)) + 1 <= (
          completion_tokens
      ):
        kept.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": body}])
  return kept, seen


def write_jsonl(path: str, chats: list) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for messages in chats:
      f.write(json.dumps({"messages": messages}) + "\n")
  return path


def prepare(
    out_dir: str,
    data: demo_data.DemoData,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    max_files: int | None = None,
    max_eval: int | None = None,
) -> FunctionData:
  """Writes ``train.jsonl``, ``eval.jsonl`` (the held-out files' functions) and ``tokenizer/`` under ``out_dir``.

  Args:
    out_dir: output directory (rewritten each time: a few seconds).
    data: the demo's data, whose tokenizer and corpus split are used.
    prompt_tokens: longest prompt kept, BOS included (the sampler's prompt bucket).
    completion_tokens: longest body kept, EOS included (the sampler's new tokens).
    max_files: the same per-split limit the demo's data was made with.
    max_eval: keep only the first held-out chats (the scoring's size); None keeps all.
  """
  corpus = demo_data.build_corpus(max_files=max_files)
  tokenizer = demo_data.load_tokenizer(data.tokenizer_path)
  os.makedirs(out_dir, exist_ok=True)
  train, train_seen = _chats(tokenizer, corpus.root, corpus.train, prompt_tokens, completion_tokens)
  held_out, eval_seen = _chats(tokenizer, corpus.root, corpus.held_out, prompt_tokens, completion_tokens)
  held_out = held_out[:max_eval] if max_eval else held_out
  if not train or not held_out:
    raise ValueError(f"too few functions fit: {len(train)} train, {len(held_out)} held out; raise the token limits.")
  stats = {
      "train_functions": train_seen,
      "train_chats": len(train),
      "eval_functions": eval_seen,
      "eval_chats": len(held_out),
      "prompt_tokens": prompt_tokens,
      "completion_tokens": completion_tokens,
  }
  return FunctionData(
      write_hf_tokenizer(data.tokenizer_path, os.path.join(out_dir, "tokenizer")),
      write_jsonl(os.path.join(out_dir, "train.jsonl"), train),
      write_jsonl(os.path.join(out_dir, "eval.jsonl"), held_out),
      stats,
  )
