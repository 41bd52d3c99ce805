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

"""A resumed run trains on the batches an uninterrupted run trains on, for grain and hf data (real, non-repeating).

A run that dies (SIGKILL, preemption) leaves its committed checkpoints and nothing else; checkpoint_test.py shows
that with a real SIGKILL. Here the same state is made exactly: the uninterrupted run's directory is copied and the
checkpoints after step ``_KEEP`` are deleted, then the same run is started again. The losses it logs after resuming
must equal the uninterrupted run's at the same steps, which only holds when it reads the same batches.
"""

import logging
import pathlib
import shutil

from absl import logging as absl_logging
import numpy as np
import pytest

from maxtext_distill_plugin.training import data_resume
from tests.conftest import committed_steps, read_metrics, train_in_process
from tests.integration import data_testing

_STEPS = 4
_KEEP = 1  # the last checkpoint the "killed" run committed (optimizer step 1: two steps done)
_LOSSES = ("distill/total_loss", "distill/hard_loss", "distill/soft_loss", "distill/teacher_loss")


def _grain_args(tmp_path) -> list[str]:
  path = data_testing.write_token_array_record(str(tmp_path / "train.array_record"), count=64, length=32, vocab_size=512)
  import maxtext  # pylint: disable=import-outside-toplevel

  tokenizer = pathlib.Path(maxtext.__file__).parent / "assets" / "tokenizers" / "tokenizer.llama2"
  return [
      "dataset_type=grain",
      "grain_file_type=arrayrecord",
      f"grain_train_files={path}",
      "train_data_columns=['tokens']",
      "tokenize_train_data=False",
      "tokenizer_type=sentencepiece",
      f"tokenizer_path={tokenizer}",
      "packing=False",
      "grain_worker_count=0",
  ]


def _hf_args(tmp_path) -> list[str]:
  texts = data_testing.sentences(300)
  train = data_testing.write_text_jsonl(str(tmp_path / "train.jsonl"), texts)
  tokenizer = data_testing.train_hf_tokenizer(str(tmp_path / "tokenizer"), texts)
  return ["dataset_type=hf", "hf_path=json", f"hf_train_files={train}", f"tokenizer_path={tokenizer}"]


def _losses(path) -> dict[int, dict]:
  return {r["step"]: r for r in read_metrics(path) if "distill/total_loss" in r}


@pytest.mark.parametrize("dataset", ["grain", "hf"])
def test_resumed_run_continues_at_the_next_unseen_batch(dataset, tmp_path, teacher_checkpoint, caplog):
  data_args = (_grain_args if dataset == "grain" else _hf_args)(tmp_path)
  # One compilation cache for both runs: the resumed run reuses the first run's executables.
  common = [
      f"steps={_STEPS}",
      "checkpoint_period=1",
      "log_period=1",
      f"jax_cache_dir={tmp_path / 'jax-cache'}",
      *data_args,
  ]
  full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
  train_in_process(full_dir, teacher_checkpoint, *common, f"metrics_file={tmp_path / 'full.jsonl'}")
  reference = _losses(tmp_path / "full.jsonl")
  assert sorted(reference) == list(range(1, _STEPS + 1))
  # Non-repeating data: every step sees another batch, so a restart of the data would show in the losses.
  assert len({round(r["distill/teacher_loss"], 6) for r in reference.values()}) == _STEPS

  shutil.copytree(full_dir / "run", resumed_dir / "run")
  checkpoints = resumed_dir / "run" / "checkpoints"
  for step in committed_steps(checkpoints):
    if step > _KEEP:
      shutil.rmtree(checkpoints / str(step))
  assert committed_steps(checkpoints)[-1] == _KEEP

  caplog.set_level(logging.INFO)
  absl_logging.set_verbosity(absl_logging.INFO)
  train_in_process(resumed_dir, teacher_checkpoint, *common, f"metrics_file={tmp_path / 'resumed.jsonl'}")
  resumed = _losses(tmp_path / "resumed.jsonl")
  # Optimizer step k is logged as k + 1: the resumed run trains steps _KEEP + 1 .. _STEPS - 1.
  assert sorted(resumed) == list(range(_KEEP + 2, _STEPS + 1))
  for step, record in resumed.items():
    for name in _LOSSES:
      assert np.isfinite(record[name])
      np.testing.assert_allclose(record[name], reference[step][name], rtol=1e-5, err_msg=f"{name} at step {step}")
  if dataset == "grain":
    assert "grain iterator restored" in caplog.text
  else:
    assert f"skipping the {_KEEP + 1} batches of steps [0, {_KEEP + 1})" in caplog.text


class _CountingLoader:

  def __init__(self):
    self.drawn = 0

  def load_next_batch_pre_sharding(self):
    self.drawn += 1


class _Config:

  def __init__(self, dataset_type, checkpoint_dir):
    from maxtext.configs.types import DatasetType  # pylint: disable=import-outside-toplevel

    self.dataset_type, self.checkpoint_dir = DatasetType(dataset_type), checkpoint_dir


@pytest.mark.parametrize(
    "dataset_type, has_iter, offline, expected",
    [
        ("hf", False, False, 7),
        ("tfds", False, False, 7),
        ("c4_mlperf", False, False, 7),
        ("grain", True, False, 0),
        ("grain", False, False, 7),  # a grain checkpoint without the iterator item: skip instead
        ("synthetic", False, False, 0),
        ("hf", False, True, 0),  # offline: the cache is indexed by step
    ],
)
def test_batches_dropped_per_dataset_type(dataset_type, has_iter, offline, expected, tmp_path):
  if has_iter:
    (tmp_path / "6" / "iter").mkdir(parents=True)
  loader = _CountingLoader()
  dropped = data_resume.continue_data(_Config(dataset_type, str(tmp_path)), loader, 7, offline=offline)
  assert dropped == loader.drawn == expected
  assert data_resume.continue_data(_Config(dataset_type, str(tmp_path)), _CountingLoader(), 0, offline=offline) == 0
