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

"""Every batch source resumes where an uninterrupted run is: ``skip_to(k)`` then ``next()`` gives the straight run's
batch ``k`` onwards (tiny in-memory data, no model).

The dataset source runs over a real shuffled Grain pipeline, both ways a resumed run finds it (MaxText restored the
Grain iterator, or the pipeline starts again and the trained-on batches are drawn and dropped); the cache source
over a cache reader across epochs with a shuffle seed; the on-policy source over a prompt source with a sampler that
draws its choice and its samples with on_policy.py's own per-step functions.
"""

import grain
import jax
import numpy as np
import pytest

from maxtext_distill_plugin.training import on_policy
from maxtext_distill_plugin.training.sources import base
from maxtext_distill_plugin.training.sources import cache
from maxtext_distill_plugin.training.sources import dataset
from maxtext_distill_plugin.training.sources import sampled
from tests.conftest import token_fields

_ROWS, _LENGTH, _BATCH, _K, _VOCAB = 40, 6, 4, 3, 50
_STEPS, _RESUME_AT = 14, 5  # 10 batches per epoch: the straight run crosses an epoch boundary after the resume


def _record(index: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(index)
  tokens = rng.integers(1, _VOCAB, _LENGTH).astype(np.int32)
  return {
      **token_fields(tokens),
      "teacher_topk_ids": np.sort(rng.choice(_VOCAB, (_LENGTH, _K)), axis=-1).astype(np.int32),
      "teacher_topk_logprobs": np.log(rng.dirichlet(np.ones(_K), _LENGTH)).astype(np.float32),
      "teacher_tail_logmass": np.full(_LENGTH, -np.inf, np.float32),
  }


def _host(batch: dict) -> dict[str, np.ndarray]:
  return {key: np.asarray(jax.device_get(value)) for key, value in batch.items()}


def _assert_same_batches(straight: list[dict], resumed: list[dict]) -> None:
  assert len(straight) == len(resumed)
  for step, (a, b) in enumerate(zip(straight, resumed)):
    assert sorted(a) == sorted(b), step
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key}, batch {step} after the resume")


def _run(source: base.BatchSource, start: int, *, state=None) -> list[dict]:
  source.skip_to(start)
  return [_host(source.next(state, None)[0]) for _ in range(start, _STEPS)]


class _Loader:
  """MaxText's ``DataLoader`` as the dataset source uses it: each call draws the iterator's next batch."""

  def __init__(self, iterator):
    self.iterator = iterator

  def load_next_batch_pre_sharding(self):
    return next(self.iterator)

  def load_next_batch(self):
    return jax.device_put(self.load_next_batch_pre_sharding())


class _Config:

  def __init__(self, dataset_type, checkpoint_dir):
    from maxtext.configs.types import DatasetType  # pylint: disable=import-outside-toplevel

    self.dataset_type, self.checkpoint_dir = DatasetType(dataset_type), str(checkpoint_dir)


def _grain_iterator():
  """A shuffled, non-repeating Grain pipeline: every batch differs, so a restart from batch 0 would show."""
  records = grain.MapDataset.range(_STEPS * _BATCH).map(_record).shuffle(seed=3)
  return iter(records.batch(_BATCH, drop_remainder=True).to_iter_dataset())


def test_dataset_source_resumes_by_skipping_when_the_pipeline_starts_again(tmp_path):
  straight = _run(dataset.DatasetSource(_Config("hf", tmp_path), _Loader(_grain_iterator())), 0)
  assert len({a["inputs"].tobytes() for a in straight}) == _STEPS
  resumed = _run(dataset.DatasetSource(_Config("hf", tmp_path), _Loader(_grain_iterator())), _RESUME_AT)
  _assert_same_batches(straight[_RESUME_AT:], resumed)


def test_dataset_source_keeps_the_grain_iterator_maxtext_restored(tmp_path):
  first = _grain_iterator()
  straight = [_host(next(first)) for _ in range(_STEPS)]
  replay = _grain_iterator()
  for _ in range(_RESUME_AT):
    next(replay)
  restored = _grain_iterator()
  restored.set_state(replay.get_state())  # what MaxText does with the checkpoint's "iter" item
  (tmp_path / str(_RESUME_AT - 1) / "iter").mkdir(parents=True)  # the checkpoint MaxText resumed from holds it
  resumed = _run(dataset.DatasetSource(_Config("grain", tmp_path), _Loader(restored)), _RESUME_AT)
  _assert_same_batches(straight[_RESUME_AT:], resumed)


def test_dataset_source_cannot_go_back(tmp_path):
  source = dataset.DatasetSource(_Config("hf", tmp_path), _Loader(_grain_iterator()))
  source.next(None, None)
  with pytest.raises(ValueError, match="before its first batch"):
    source.skip_to(3)


class _MemoryCache:
  """A cache reader (``any_format.CacheReader``) over records made in memory."""

  directory, top_k, tail_logmass_known = "/memory", _K, False

  def __len__(self):
    return _ROWS

  def __getitem__(self, index):
    return _record(int(index))

  def __getitems__(self, indices):
    return [self[i] for i in indices]


def _cache_source() -> cache.CacheSource:
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return cache.CacheSource(_MemoryCache(), global_batch=_BATCH, data_sharding=sharding, shuffle_seed=11)


def test_cache_source_resumes_at_the_step_across_epochs():
  straight = _run(_cache_source(), 0)
  resumed = _run(_cache_source(), _RESUME_AT)
  _assert_same_batches(straight[_RESUME_AT:], resumed)
  # The batch carries the cached teacher, and the second epoch (from batch 10) is another order of the rows.
  assert {"teacher_topk_ids", "teacher_topk_logprobs", "teacher_tail_logmass"} <= set(straight[0])
  per_epoch = _ROWS // _BATCH
  assert not np.array_equal(straight[0]["inputs"], straight[per_epoch]["inputs"])


class _Sampler:
  """Stands in for ``on_policy.OnPolicy``: on the steps its schedule draws, the batch's tokens are replaced by tokens
  drawn from the step's sampling key, and the student ``state`` it was given is recorded in the batch."""

  seed, fraction = 5, 0.5

  def batch_for_step(self, step, state, teacher_state, data_batch):
    del teacher_state
    used = on_policy.uses_samples(self.seed, step, self.fraction)
    batch = dict(data_batch)
    if used:
      sampled_tokens = jax.random.randint(on_policy.step_keys(self.seed, step)[1], (_BATCH, _LENGTH), 0, _VOCAB)
      batch["inputs"] = sampled_tokens.astype(np.int32) + state
    return batch, {"distill/on_policy_step": (float(used), 1.0)}

  def eval_metrics(self, state, teacher_state, batch, rows):
    del state, teacher_state, batch, rows
    return {}


def test_on_policy_source_resumes_its_prompts_and_its_draws():
  straight = _run(sampled.SampledSource(_cache_source(), _Sampler()), 0, state=1000)
  resumed = _run(sampled.SampledSource(_cache_source(), _Sampler()), _RESUME_AT, state=1000)
  _assert_same_batches(straight[_RESUME_AT:], resumed)
  prompts = _run(_cache_source(), 0)
  drawn = [on_policy.uses_samples(_Sampler.seed, step, _Sampler.fraction) for step in range(_STEPS)]
  assert 0 < sum(drawn) < _STEPS  # both kinds of step occur, before and after the resume
  for step, (batch, prompt_batch) in enumerate(zip(straight, prompts)):
    assert np.array_equal(batch["inputs"], prompt_batch["inputs"]) != drawn[step], step
    assert np.array_equal(batch["targets"], prompt_batch["targets"]), step


class _PromptListSource:
  """CONTRIBUTING.md's worked example of a prompt source, verbatim: fixed token prompts, cycled in order."""

  def __init__(self, prompts: list[list[int]], *, global_batch: int, length: int, pad_id: int, data_sharding):
    self._prompts, self._rows, self._length, self._pad = prompts, global_batch, length, pad_id
    self._sharding, self._step = data_sharding, 0

  def skip_to(self, step: int) -> None:
    self._step = step  # the batch of a step is a function of the step: nothing else to restore

  def next(self, state, teacher_state) -> tuple[dict, dict]:
    del state, teacher_state
    first = self._step * self._rows
    rows = [self._prompts[(first + i) % len(self._prompts)][-self._length :] for i in range(self._rows)]
    inputs = np.full((self._rows, self._length), self._pad, np.int32)
    for i, row in enumerate(rows):
      inputs[i, : len(row)] = row
    valid = (np.arange(self._length)[None, :] < np.array([len(r) for r in rows])[:, None]).astype(np.int32)
    positions = np.broadcast_to(np.arange(self._length, dtype=np.int32), inputs.shape)
    # No scored label: the sampler takes every valid token as the prompt (on_policy_data.prompts_from_batch).
    batch = {
        "inputs": inputs,
        "targets": inputs,
        "inputs_segmentation": valid,
        "targets_segmentation": np.zeros_like(valid),
        "inputs_position": positions,
        "targets_position": positions,
    }
    self._step += 1
    return {key: jax.device_put(value, self._sharding) for key, value in batch.items()}, {}

  def eval_metrics(self, state, teacher_state, batch: dict, rows: int | None) -> dict:
    del state, teacher_state, batch, rows
    return {}


def test_a_prompt_source_gives_the_sampler_its_prompts_and_resumes():
  from maxtext_distill_plugin.training import on_policy_data  # pylint: disable=import-outside-toplevel

  prompts = [[7, 8, 9], [3], [4, 5, 6, 7, 8], [2, 2]]
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def source():
    return _PromptListSource(prompts, global_batch=2, length=_LENGTH, pad_id=0, data_sharding=sharding)

  batches = _run(source(), 0)
  _assert_same_batches(batches[_RESUME_AT:], _run(source(), _RESUME_AT))
  for step, batch in enumerate(batches):
    found = on_policy_data.prompts_from_batch(batch, 4, 0)
    for row in range(2):
      expected = prompts[(2 * step + row) % len(prompts)][-4:]  # a prompt bucket of 4 keeps the last 4 tokens
      length = int(found.length_B[row])
      assert np.asarray(found.tokens_BxP[row, :length]).tolist() == expected, (step, row)
