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


"""Several offline teachers, one cache each: batches that carry every cache in step (resumable), caches of other
sequences refused, and the weighted sum of the teachers' sparse losses against float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import paths
from maxtext_distill_plugin.teachers import ensemble
from maxtext_distill_plugin.teachers import kinds
from maxtext_distill_plugin.training.sources import cache
from maxtext_distill_plugin.training.sources import caches
from tests import numpy_reference as ref
from tests.conftest import token_fields

_ROWS, _LENGTH, _BATCH, _VOCAB = 24, 5, 4, 11
ALPHA, T = 0.5, 1.0


class _MemoryCache:
  """A cache reader (``any_format.CacheReader``) of one teacher's top-``top_k`` over shared token rows."""

  tail_logmass_known = True

  def __init__(self, top_k: int, teacher_seed: int, rows: int = _ROWS, token_seed: int = 0):
    self.directory, self.top_k, self._teacher_seed, self._rows, self._token_seed = (
        f"/k{top_k}",
        top_k,
        teacher_seed,
        rows,
        token_seed,
    )

  def __len__(self):
    return self._rows

  def record(self, index: int) -> dict[str, np.ndarray]:
    tokens = np.random.default_rng([self._token_seed, index]).integers(1, _VOCAB, _LENGTH).astype(np.int32)
    logits = np.random.default_rng([self._teacher_seed, index]).standard_normal((_LENGTH, _VOCAB))
    cached = ref.topk_cache(logits, self.top_k)
    return {
        **token_fields(tokens),
        "teacher_topk_ids": cached[0].astype(np.int32),
        "teacher_topk_logprobs": cached[1].astype(np.float32),
        "teacher_tail_logmass": cached[2].astype(np.float32),
        "logits": logits,  # for the reference only: not a cache field, never read by the source
    }

  def __getitem__(self, index):
    return self.record(int(index))

  def __getitems__(self, indices):
    return [self[i] for i in indices]


def _source(readers, seed=3):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  each = tuple(cache.CacheSource(r, global_batch=_BATCH, data_sharding=sharding, shuffle_seed=seed) for r in readers)
  return caches.CachesSource(("math", "code"), each, sharding)


def test_every_cache_is_read_in_step_and_resumes_at_the_step():
  readers = (_MemoryCache(3, 1), _MemoryCache(5, 2))
  straight = [_source(readers).host_batch_arrays(step) for step in range(8)]
  resumed = _source(readers)
  resumed.skip_to(5)
  batch, _ = resumed.next(None, None)
  for key, value in straight[5].items():
    np.testing.assert_array_equal(np.asarray(batch[key]), value, err_msg=key)
  rows = cache.CacheSource(readers[0], global_batch=_BATCH, data_sharding=None, shuffle_seed=3).host_rows(5)
  for index, reader in enumerate(readers):  # each teacher's fields are its own cache's records of those rows
    want = [reader.record(r) for r in rows]
    for key in ("teacher_topk_ids", "teacher_topk_logprobs", "teacher_tail_logmass"):
      np.testing.assert_array_equal(straight[5][key + caches.field_suffix(index)], np.stack([w[key] for w in want]))
  assert straight[5]["teacher_topk_ids@0"].shape[-1] == 3 and straight[5]["teacher_topk_ids@1"].shape[-1] == 5


@pytest.mark.parametrize(
    "second,needle",
    [(_MemoryCache(5, 2, rows=_ROWS - 4), "differ in length"), (_MemoryCache(5, 2, token_seed=9), "differ in inputs")],
)
def test_caches_of_other_sequences_are_refused(second, needle):
  with pytest.raises(caches.CachesMismatch, match=needle):
    _source((_MemoryCache(3, 1), second))


def test_weighted_sparse_losses_of_two_caches_match_numpy():
  readers, weights = (_MemoryCache(3, 1), _MemoryCache(_VOCAB, 2)), (0.25, 0.75)  # k = 3 and k = V: other supports
  batch = _source(readers).host_batch_arrays(0)
  members = tuple(kinds.CachedTeacher("bucket", caches.field_suffix(i)) for i in range(2))
  teacher = ensemble.Ensemble(members, ("math", "code"), weights, "loss").head(None, batch, lean=False)
  rng = np.random.default_rng(0)
  student = rng.standard_normal((_BATCH, _LENGTH, _VOCAB))
  mask = np.ones((_BATCH, _LENGTH), bool)
  total, count, metrics = paths.distillation_terms(
      heads.StudentLogits(jnp.asarray(student, jnp.float32)),
      teacher,
      jnp.asarray(batch["targets"]),
      jnp.asarray(mask),
      objective.LossWeights(alpha=jnp.float32(ALPHA), temperature=jnp.float32(T), beta=jnp.float32(0.0)),
      heads.LossOptions(),
  )
  rows = cache.CacheSource(readers[0], global_batch=_BATCH, data_sharding=None, shuffle_seed=3).host_rows(0)
  want = 0.0
  for index, (name, weight, reader) in enumerate(zip(("math", "code"), weights, readers)):
    records = [reader.record(r) for r in rows]
    cached = tuple(
        np.stack([r[key] for r in records])
        for key in ("teacher_topk_ids", "teacher_topk_logprobs", "teacher_tail_logmass")
    )
    soft = ref.sparse_divergence("forward_kl", cached, student, T, "bucket") * T**2
    ce = -np.take_along_axis(ref.log_softmax(student), batch["targets"][..., None], -1)[..., 0]
    want += weight * np.mean(ALPHA * soft + (1 - ALPHA) * ce)
    pair = metrics[metric_names.per_teacher(name, metric_names.TEACHER_SOFT_LOSS)]
    np.testing.assert_allclose(float(pair[0]) / float(pair[1]), np.mean(soft), rtol=2e-5, err_msg=name)
    del index
  np.testing.assert_allclose(float(total) / float(count), want, rtol=2e-5)
