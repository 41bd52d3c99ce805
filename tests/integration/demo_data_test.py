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

"""The demo's corpus, tokenizer and records, down to batches from MaxText's own Grain pipeline."""

import os

import numpy as np
import pytest

from maxtext_distill_plugin.demo import data as demo_data
from maxtext_distill_plugin.demo import records as demo_records
from tests.conftest import REPO

MAX_FILES = 30
CHUNK = 64
VOCAB = 512


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return demo_data.prepare(str(tmp_path_factory.mktemp("demo_data")), CHUNK, vocab_size=VOCAB, max_files=MAX_FILES)


def test_corpus_is_the_stdlib_without_tests_split_by_a_stable_hash():
  corpus = demo_data.build_corpus()
  everything = demo_data.list_sources(corpus.root)
  assert sorted(corpus.train + corpus.held_out) == everything
  assert not set(corpus.train) & set(corpus.held_out)
  assert all(p.endswith(".py") for p in everything)
  for path in everything:
    parts = path.split("/")
    assert not set(parts[:-1]) & demo_data.SKIPPED_DIRS, path
    assert not parts[-1].startswith("test"), path
  # Roughly one file in HELD_OUT_BUCKETS, and the same answer every time (not Python's salted hash).
  assert 0.03 < len(corpus.held_out) / len(everything) < 0.25
  assert [demo_data.is_held_out(p) for p in everything[:50]] == [demo_data.is_held_out(p) for p in everything[:50]]
  assert demo_data.is_held_out("json/encoder.py") == demo_data.is_held_out("json/encoder.py")


def test_chunks_cover_the_document_in_order():
  ids = list(range(10))
  assert demo_data.chunk_document(ids, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
  with pytest.raises(ValueError):
    demo_data.chunk_document(ids, 1)


def test_tokenizer_is_deterministic_keeps_whitespace_and_reserves_pad(tmp_path):
  corpus = demo_data.build_corpus(max_files=MAX_FILES)
  first = demo_data.train_tokenizer(corpus, str(tmp_path / "a.model"), VOCAB)
  second = demo_data.train_tokenizer(corpus, str(tmp_path / "b.model"), VOCAB)
  with open(first, "rb") as a, open(second, "rb") as b:
    assert a.read() == b.read()
  sp = demo_data.load_tokenizer(first)
  assert sp.vocab_size() == VOCAB
  assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (
      demo_data.PAD_ID,
      demo_data.UNK_ID,
      demo_data.BOS_ID,
      demo_data.EOS_ID,
  )
  source = "def f(x):\n    if x:\n        return [x,  1]\n    return None\n"
  ids = sp.EncodeAsIds(source)
  assert sp.DecodeIds(ids) == source
  assert demo_data.PAD_ID not in ids


def test_prepare_writes_records_and_reuses_them(prepared, tmp_path):
  stats = prepared.stats
  train = demo_records.read_array_record(prepared.train_pattern)
  held_out = demo_records.read_array_record(prepared.eval_pattern)
  assert len(train) == stats["train_records"] and len(held_out) == stats["eval_records"]
  assert sum(map(len, train)) == stats["train_tokens"]
  for records, files in ((train, stats["train_files"]), (held_out, stats["eval_files"])):
    flat = np.concatenate([np.asarray(r) for r in records])
    assert all(0 < len(r) <= CHUNK for r in records)
    assert int((flat == demo_data.BOS_ID).sum()) == files
    assert int((flat == demo_data.EOS_ID).sum()) == files
    assert flat.min() > demo_data.PAD_ID and flat.max() < VOCAB
  data_dir = os.path.dirname(prepared.tokenizer_path)
  before = os.path.getmtime(prepared.train_pattern)
  again = demo_data.prepare(data_dir, CHUNK, vocab_size=VOCAB, max_files=MAX_FILES)
  assert again == prepared and os.path.getmtime(prepared.train_pattern) == before
  other = demo_data.prepare(str(tmp_path), CHUNK // 2, vocab_size=VOCAB, max_files=MAX_FILES)
  assert other.fingerprint != prepared.fingerprint


def test_maxtext_grain_pipeline_reads_the_records(prepared):
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline import grain_data_processing  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  cfg = pyconfig.initialize([
      "test",
      str(REPO / "configs" / "demo-model.yml"),
      f"max_target_length={CHUNK}",
      "per_device_batch_size=4",
      f"vocab_size={VOCAB}",
      "enable_checkpointing=False",
      "run_name=grain",
      *prepared.maxtext_args(),
  ])
  mesh = maxtext_utils.get_mesh_from_config(cfg)
  for make in (grain_data_processing.make_grain_train_iterator, grain_data_processing.make_grain_eval_iterator):
    batch = jax.device_get(next(iter(make(cfg, mesh, [jax.process_index()]))))
    inputs, targets, mask = batch["inputs"], batch["targets"], batch["targets_segmentation"] != 0
    assert inputs.shape == targets.shape == (4, CHUNK)
    assert mask.sum() > CHUNK  # real tokens, not padding
    assert targets[mask].min() > demo_data.PAD_ID and targets[mask].max() < VOCAB
    # Next-token targets: where a target is valid and in the same segment, it is the next input.
    same = mask[:, :-1] & (batch["inputs_segmentation"][:, 1:] == batch["inputs_segmentation"][:, :-1])
    np.testing.assert_array_equal(targets[:, :-1][same], inputs[:, 1:][same])
