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

"""A verifiable task made locally: multi-digit addition as SFT chats, with a character-level tokenizer.

* Problems: ``a + b`` with ``a`` and ``b`` drawn uniformly from ``[0, 10**digits)`` by a seeded NumPy generator.
  The prompt is ``"a+b="`` and the completion the decimal sum ``str(a + b)`` (most significant digit first, so a
  carry must be worked out before the digit it changes is written), then EOS. The held-out set is drawn first and
  training problems never repeat a held-out pair ``(a, b)``: the test set is disjoint from training.
* Tokenizer: one token per character, :data:`VOCAB` (``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3, the digits
  4-13, ``+`` 14, ``=`` 15), built with the ``tokenizers`` library as a Hugging Face fast tokenizer (MaxText's SFT
  pipeline reads ``AutoTokenizer``) and saved locally with the chat template ``<s>`` + prompt, completion +
  ``</s>``. Nothing is downloaded.
* Metric: greedy exact match, the sampled completion's tokens (through EOS) equal the reference's
  (:func:`exact_matches`).
"""

import dataclasses
import json
import os

import numpy as np

from tools.study import function_data

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
VOCAB = {**{token: i for i, token in enumerate(SPECIALS)}, **{c: len(SPECIALS) + i for i, c in enumerate("0123456789+=")}}
EOS_ID = VOCAB["</s>"]


@dataclasses.dataclass(frozen=True)
class ArithmeticData:
  """What :func:`prepare` made."""

  tokenizer_dir: str
  train_path: str
  eval_path: str
  stats: dict

  def maxtext_args(self) -> list[str]:
    """``key=value`` arguments that make MaxText's HF pipeline read these chats with completion-only masks."""
    return function_data.FunctionData(self.tokenizer_dir, self.train_path, self.eval_path, {}).maxtext_args()


def problems(digits: int, count: int, rng: np.random.Generator, exclude=frozenset()) -> list[tuple[int, int]]:
  """``count`` distinct pairs ``(a, b)`` of numbers below ``10**digits``, none of them in ``exclude``."""
  limit = 10**digits
  if count + len(exclude) > limit * limit * 9 // 10:  # drawing beyond that would mostly repeat
    raise ValueError(f"{count} problems of {digits} digits: too many for {limit * limit} pairs; use more digits.")
  chosen, seen = [], set(exclude)
  while len(chosen) < count:
    for a, b in rng.integers(0, limit, size=(count, 2)).tolist():
      if (a, b) not in seen and len(chosen) < count:
        seen.add((a, b))
        chosen.append((a, b))
  return chosen


def chat(a: int, b: int) -> list[dict]:
  """The SFT chat of ``a + b``: user ``"a+b="``, assistant the sum."""
  return [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]


def encode(text: str) -> list[int]:
  """Token ids of ``text`` (digits, ``+``, ``=``), one per character, as the saved tokenizer gives them."""
  return [VOCAB[c] for c in text]


def write_hf_tokenizer(directory: str) -> str:
  """Saves the character-level tokenizer as a Hugging Face fast tokenizer with the study's chat template."""
  from tokenizers import decoders, models, Tokenizer  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  # BPE without merges splits a word into its characters; with no pre-tokenizer the whole text is one word.
  tokenizer = Tokenizer(models.BPE(dict(VOCAB), [], unk_token="<unk>"))
  # MaxText's chat template step decodes the token ids back to text: join the characters without spaces.
  tokenizer.decoder = decoders.Fuse()
  tokenizer.add_special_tokens(list(SPECIALS))
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
  )
  fast.chat_template = function_data.CHAT_TEMPLATE
  os.makedirs(directory, exist_ok=True)
  fast.save_pretrained(directory)
  return directory


def prepare(out_dir: str, *, digits: int, train_size: int, eval_size: int, seed: int = 0) -> ArithmeticData:
  """Writes ``train.jsonl``, ``eval.jsonl`` (disjoint problems) and ``tokenizer/`` under ``out_dir``, unless a
  ``stats.json`` there says they were made with the same arguments."""
  stats = {
      "digits": digits,
      "train_chats": train_size,
      "eval_chats": eval_size,
      "seed": seed,
      "prompt_tokens": 2 * digits + 3,  # <s>, two numbers, + and =
      "completion_tokens": digits + 2,  # up to digits + 1 sum digits, and EOS
  }
  made = ArithmeticData(*(os.path.join(out_dir, name) for name in ("tokenizer", "train.jsonl", "eval.jsonl")), stats)
  stamp = os.path.join(out_dir, "stats.json")
  if os.path.isfile(stamp):
    with open(stamp, encoding="utf-8") as f:
      if json.load(f) == stats:  # the same problems: kept as they are, for runs that may be reading them
        return made
  rng = np.random.default_rng(seed)
  held_out = problems(digits, eval_size, rng)
  train = problems(digits, train_size, rng, exclude=frozenset(held_out))
  os.makedirs(out_dir, exist_ok=True)
  for name, pairs in (("train", train), ("eval", held_out)):
    function_data.write_jsonl(os.path.join(out_dir, f"{name}.jsonl"), [chat(a, b) for a, b in pairs])
  write_hf_tokenizer(made.tokenizer_dir)
  with open(stamp, "w", encoding="utf-8") as f:
    json.dump(stats, f)
  return made


def exact_matches(samples_tokens, completion_mask, batch: dict, rows) -> list[bool]:
  """Per scored row, whether the sampled completion's tokens (EOS included) equal the reference completion's."""
  targets, scored = np.asarray(batch["targets"]), np.asarray(batch["targets_segmentation"]) != 0
  tokens, mask = np.asarray(samples_tokens), np.asarray(completion_mask)
  return [tokens[b][mask[b]].tolist() == targets[b][scored[b]].tolist() for b in range(tokens.shape[0]) if rows[b]]
