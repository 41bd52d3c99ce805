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

"""The demo's data, made on the spot with nothing downloaded.

* Corpus: the ``.py`` sources of the running interpreter's standard library
  (tests, third-party packages and generated data tables left out), in sorted
  path order. A file is held out for evaluation when a SHA-256 of its relative
  path falls in one bucket of ``HELD_OUT_BUCKETS``, so the split does not move
  when files are added or removed elsewhere.
* Tokenizer: a SentencePiece BPE model of ``VOCAB_SIZE`` pieces trained on the
  training files only, single-pass and seeded, so the same sources give the
  same model byte for byte. Whitespace is kept (indentation matters in Python)
  and the newline is a piece of its own. ``pad=0 unk=1 bos=2 eos=3``: MaxText
  pads with the tokenizer's ``pad_id``, which must be a real, unused id.
* Records: pre-tokenized ArrayRecord files that MaxText's own Grain pipeline
  reads (:mod:`.records`), holding up to ``chunk_tokens`` ids of one file per
  record; a file's first chunk starts with BOS and its last ends with EOS.
  Chunks are written in a seeded random order so that the first evaluation
  batches sample many files.

:func:`prepare` makes all of it under one directory and reuses what is already
there when a manifest says it was made with the same settings.
"""

import dataclasses
import hashlib
import io
import json
import os
import random
import sysconfig

from absl import logging

from maxtext_distill_plugin.demo import records

VOCAB_SIZE = 1024
HELD_OUT_BUCKETS = 10
SEED = 20260101
TOKENIZER_THREADS = 2
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# Directories of the standard library that are not ordinary Python code, or not the standard library's own.
SKIPPED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "encodings", "pydoc_data"}
)
_MANIFEST = "manifest.json"
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Source files of the corpus, as sorted paths relative to ``root``."""

  root: str
  train: tuple[str, ...]
  held_out: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class DemoData:
  """What :func:`prepare` made: the paths MaxText's config keys point at, counts, and a hash of the settings."""

  tokenizer_path: str
  train_pattern: str
  eval_pattern: str
  vocab_size: int
  stats: dict
  fingerprint: str

  def maxtext_args(self) -> list[str]:
    """``key=value`` arguments that make MaxText's Grain pipeline read these files."""
    return [
        "dataset_type=grain",
        "grain_file_type=arrayrecord",
        f"grain_train_files={self.train_pattern}",
        f"grain_eval_files={self.eval_pattern}",
        f"train_data_columns=['{records.COLUMN}']",
        f"eval_data_columns=['{records.COLUMN}']",
        "tokenize_train_data=False",
        "tokenize_eval_data=False",
        "tokenizer_type=sentencepiece",
        f"tokenizer_path={self.tokenizer_path}",
    ]


def stdlib_root() -> str:
  """The directory of the running interpreter's pure-Python standard library."""
  return sysconfig.get_paths()["stdlib"]


def list_sources(root: str) -> list[str]:
  """Sorted POSIX paths, relative to ``root``, of the ``.py`` files outside ``SKIPPED_DIRS``."""
  found = []
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith("test")]
    for name in files:
      if name.endswith(".py") and not name.startswith("test"):
        found.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
  return sorted(found)


def is_held_out(rel_path: str, buckets: int = HELD_OUT_BUCKETS) -> bool:
  """Whether ``rel_path`` belongs to the evaluation split (a stable hash, not Python's salted ``hash``)."""
  digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % buckets == 0


def build_corpus(root: str | None = None, max_files: int | None = None) -> Corpus:
  """Lists and splits the corpus; ``max_files`` keeps the first files of each split (for tests)."""
  root = root or stdlib_root()
  paths = list_sources(root)
  if not paths:
    raise FileNotFoundError(f"no .py files under {root}; the demo needs the Python standard library's sources.")
  train = [p for p in paths if not is_held_out(p)]
  held_out = [p for p in paths if is_held_out(p)]
  if max_files is not None:
    train, held_out = train[:max_files], held_out[: max(1, max_files // HELD_OUT_BUCKETS)]
  if not train or not held_out:
    raise ValueError(f"the corpus under {root} is too small to split ({len(train)} train, {len(held_out)} held out).")
  return Corpus(root=root, train=tuple(train), held_out=tuple(held_out))


def read_source(root: str, rel_path: str) -> str:
  with open(os.path.join(root, rel_path), encoding="utf-8", errors="replace") as f:
    return f.read()


def _training_lines(corpus: Corpus):
  for rel_path in corpus.train:
    for line in read_source(corpus.root, rel_path).split("\n"):
      if line.strip():
        yield line


def train_tokenizer(corpus: Corpus, model_path: str, vocab_size: int = VOCAB_SIZE) -> str:
  """Trains the BPE tokenizer on the training split; writes and returns ``model_path``."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel

  spm.set_random_generator_seed(SEED)
  model = io.BytesIO()
  spm.SentencePieceTrainer.Train(
      sentence_iterator=_training_lines(corpus),
      model_writer=model,
      model_type="bpe",
      vocab_size=vocab_size,
      character_coverage=1.0,
      input_sentence_size=0,
      shuffle_input_sentence=False,
      num_threads=TOKENIZER_THREADS,
      pad_id=PAD_ID,
      unk_id=UNK_ID,
      bos_id=BOS_ID,
      eos_id=EOS_ID,
      user_defined_symbols=["\n"],
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True,
      split_digits=True,
      max_sentence_length=8192,
      minloglevel=2,
  )
  os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
  with open(model_path, "wb") as f:
    f.write(model.getvalue())
  return model_path


def load_tokenizer(model_path: str):
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel

  return spm.SentencePieceProcessor(model_file=model_path)


def chunk_document(ids: list[int], chunk_tokens: int) -> list[list[int]]:
  """Splits one file's ids (BOS ... EOS) into consecutive pieces of at most ``chunk_tokens``."""
  if chunk_tokens < 2:
    raise ValueError(f"chunk_tokens={chunk_tokens} must be >= 2.")
  return [ids[i : i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)]


def encode_split(tokenizer, root: str, paths: tuple[str, ...], chunk_tokens: int) -> list[list[int]]:
  """All chunks of ``paths``, in a seeded random order."""
  chunks = []
  for rel_path in paths:
    ids = [BOS_ID] + tokenizer.EncodeAsIds(read_source(root, rel_path)) + [EOS_ID]
    chunks.extend(chunk_document(ids, chunk_tokens))
  random.Random(SEED).shuffle(chunks)
  return chunks


def _settings(corpus: Corpus, chunk_tokens: int, vocab_size: int) -> dict:
  listing = hashlib.sha256("\n".join(corpus.train + ("--",) + corpus.held_out).encode()).hexdigest()
  return {
      "format": _FORMAT_VERSION,
      "root": corpus.root,
      "files": listing,
      "chunk_tokens": chunk_tokens,
      "vocab_size": vocab_size,
      "seed": SEED,
  }


def _fingerprint(settings: dict) -> str:
  return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _load_manifest(data_dir: str) -> dict | None:
  try:
    with open(os.path.join(data_dir, _MANIFEST), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def prepare(data_dir: str, chunk_tokens: int, vocab_size: int = VOCAB_SIZE, max_files: int | None = None) -> DemoData:
  """Makes (or reuses) the tokenizer and the train/eval ArrayRecord files under ``data_dir``.

  Args:
    data_dir: output directory; created if missing.
    chunk_tokens: largest record, in tokens; use the model's ``max_target_length``
      so that MaxText's packing never has to cut a record.
    vocab_size: SentencePiece vocabulary size (the model's ``vocab_size``).
    max_files: keep only this many training files (tests); None keeps all.

  Returns:
    The paths and counts, see :class:`DemoData`.
  """
  data_dir = os.path.abspath(data_dir)
  corpus = build_corpus(max_files=max_files)
  settings = _settings(corpus, chunk_tokens, vocab_size)
  tokenizer_path = os.path.join(data_dir, f"stdlib-bpe-{vocab_size}.model")
  train_path = os.path.join(data_dir, "train.array_record")
  eval_path = os.path.join(data_dir, "eval.array_record")
  manifest = _load_manifest(data_dir)
  if (
      manifest
      and manifest.get("settings") == settings
      and all(map(os.path.exists, (tokenizer_path, train_path, eval_path)))
  ):
    logging.info("Reusing demo data in %s", data_dir)
    return DemoData(tokenizer_path, train_path, eval_path, vocab_size, manifest["stats"], _fingerprint(settings))

  os.makedirs(data_dir, exist_ok=True)
  logging.info("Training a %d-piece tokenizer on %d files of %s", vocab_size, len(corpus.train), corpus.root)
  train_tokenizer(corpus, tokenizer_path, vocab_size)
  tokenizer = load_tokenizer(tokenizer_path)
  stats = {"train_files": len(corpus.train), "eval_files": len(corpus.held_out)}
  for split, paths, path in (("train", corpus.train, train_path), ("eval", corpus.held_out, eval_path)):
    chunks = encode_split(tokenizer, corpus.root, paths, chunk_tokens)
    records.write_array_record(path, chunks)
    stats[f"{split}_records"] = len(chunks)
    stats[f"{split}_tokens"] = sum(map(len, chunks))
  with open(os.path.join(data_dir, _MANIFEST), "w", encoding="utf-8") as f:
    json.dump({"settings": settings, "stats": stats}, f, indent=2)
  logging.info("Demo data in %s: %s", data_dir, stats)
  return DemoData(tokenizer_path, train_path, eval_path, vocab_size, stats, _fingerprint(settings))
