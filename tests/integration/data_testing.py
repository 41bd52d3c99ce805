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

"""Small real datasets made on the spot for the data tests: JSON-lines text and chats, a local HF tokenizer, and
pre-tokenized ArrayRecord files. Every document is distinct, so a pipeline that restarts its data is visible."""

import json
import os
import random

# Words of the made-up corpus; each document is a seeded random sentence with its index in front.
WORDS = tuple(
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon".split()
)
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")  # ids 0..3: pad first, as MaxText pads with the pad id
TOKENIZER_VOCAB = 300  # below the tiny model's vocab_size=512
# A chat template in the style of the upstream SFT recipe, with this tokenizer's markers.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<s>' + message['role'] + ': ' + message['content'] + '</s>' }}{% endfor %}"
)


def sentences(count: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  return [f"doc {i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for i in range(count)]


def write_text_jsonl(path: str, texts: list[str]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for text in texts:
      f.write(json.dumps({"text": text}) + "\n")
  return path


def chats(count: int, seed: int = 1) -> list[list[dict]]:
  """Two-turn conversations: a user prompt and an assistant answer, both distinct per row."""
  prompts, answers = sentences(count, seed), sentences(count, seed + 1)
  return [
      [{"role": "user", "content": p[: 20 + i % 30]}, {"role": "assistant", "content": a[: 10 + i % 25]}]
      for i, (p, a) in enumerate(zip(prompts, answers))
  ]


def write_chat_jsonl(path: str, conversations: list[list[dict]]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for messages in conversations:
      f.write(json.dumps({"messages": messages}) + "\n")
  return path


def train_hf_tokenizer(directory: str, texts: list[str], vocab_size: int = TOKENIZER_VOCAB) -> str:
  """A byte-level BPE trained locally on ``texts``, saved as a Hugging Face tokenizer directory."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size,
      special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tokenizer.train_from_iterator(texts, trainer)
  pad, unk, bos, eos = SPECIAL_TOKENS
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, pad_token=pad, unk_token=unk, bos_token=bos, eos_token=eos
  )
  os.makedirs(directory, exist_ok=True)
  fast.save_pretrained(directory)
  return directory


def write_token_array_record(path: str, count: int, length: int, vocab_size: int, seed: int = 0) -> str:
  """``count`` distinct pre-tokenized records (ids in [4, vocab_size)) for MaxText's grain pipeline."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.demo import records  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  chunks = [rng.integers(4, vocab_size, size=length).tolist() for _ in range(count)]
  records.write_array_record(path, chunks)
  return path
