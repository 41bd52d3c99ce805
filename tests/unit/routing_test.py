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


"""Routing by static row blocks: the batch layout of the routed source, each teacher run on its own rows only, and
the loss of each row against its own teacher, checked against float64 NumPy (values and student gradients)."""

import dataclasses
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration import route_checks
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import metric_names
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import paths
from maxtext_distill_plugin.teachers import ensemble
from maxtext_distill_plugin.training import step as step_lib
from maxtext_distill_plugin.training.sources import routed
from tests import numpy_reference as ref
from tests.conftest import REPO, subprocess_env

S, D, V = 3, 4, 7
ALPHA, T = 0.6, 2.0
OPTIONS = heads.LossOptions(top_k=3, seq_chunk=2, vocab_chunk=3)


@pytest.mark.parametrize(
    "counts,rows,want",
    [
        ({"a": 30, "b": 10}, 4, (3, 1)),
        ({"a": 10, "b": 10, "c": 10}, 4, (2, 1, 1)),  # ties go to the earlier teacher
        ({"a": 1000, "b": 1}, 4, (3, 1)),  # at least one row for a teacher with examples
        ({"a": 5, "c": 5}, 2, (1, 0, 1)),  # a teacher without examples gets no rows
    ],
)
def test_rows_are_shared_in_proportion_to_the_examples(counts, rows, want):
  names = ("a", "b", "c")[: len(want)]
  assert route_checks.allocate_rows(counts, names, rows) == want


def test_fewer_rows_than_teachers_is_refused():
  with pytest.raises(errors.ConfigError, match="per_device_batch_size"):
    route_checks.allocate_rows({"a": 1, "b": 1, "c": 1}, ("a", "b", "c"), 2)


def test_unknown_route_values_are_refused():
  with pytest.raises(errors.ConfigError, match="distill_teacher_route_column.*'poetry'"):
    route_checks.count_routes(["math", "poetry"], ("math", "code"), "teacher_id")


@pytest.mark.parametrize("accumulation", (1, 2))
def test_composed_batches_split_into_each_teachers_rows(accumulation):
  """Loader batches of 2 device groups, rows (2, 1): every micro-batch gives each teacher exactly its own rows."""
  rows, groups, k = (2, 1), 2, accumulation
  batches = tuple(
      {"inputs": np.arange(groups * r * k)[:, None] + 100 * (i + 1) + np.zeros((1, S), int)} for i, r in enumerate(rows)
  )
  batch = routed.compose(batches, rows, k)
  assert batch["inputs"].shape == (groups * sum(rows) * k, S)
  micro = step_lib._split_micro_batches(batch, k)  # pylint: disable=protected-access
  blocks = heads.RowBlocks(rows)
  seen = {0: [], 1: []}
  for m in range(k):
    for teacher in (0, 1):
      taken = np.asarray(blocks.take(micro["inputs"][m], teacher))[:, 0]
      assert taken.shape == (groups * rows[teacher],)
      assert set(taken // 100) == {teacher + 1}  # the teacher's own rows only
      seen[teacher] += list(taken)
  for teacher, r in enumerate(rows):  # all of them, once
    assert sorted(seen[teacher]) == list(range(100 * (teacher + 1), 100 * (teacher + 1) + groups * r * k))
  # Device group n's loaded rows [n * P * k, (n + 1) * P * k) are the ones it owns in every micro-batch.
  per_group = sum(rows) * k
  for n in range(groups):
    owned = set(np.asarray(batch["inputs"])[n * per_group : (n + 1) * per_group, 0])
    assert owned == set(np.asarray(micro["inputs"])[:, n * sum(rows) : (n + 1) * sum(rows), 0].ravel())


@dataclasses.dataclass(frozen=True)
class _LinearTeacher:
  """A teacher kind whose logits are a fixed map of the batch's inputs: records what rows it was run on."""

  table: tuple

  def head(self, state, batch, *, lean):
    del state, lean
    return heads.TeacherLogits(jnp.asarray(self.table, jnp.float32)[batch["inputs"]])


def test_each_teacher_runs_on_its_own_rows_only():
  rng = np.random.default_rng(0)
  tables = [tuple(map(tuple, rng.standard_normal((10, V)))) for _ in range(2)]
  members = tuple(_LinearTeacher(t) for t in tables)
  group = ensemble.Ensemble(members, ("a", "b"), (0.5, 0.5), "route", route_rows=(2, 1))
  inputs = rng.integers(0, 10, (6, S))  # 2 device groups of (2 rows of a, 1 of b)
  found = group.head((None, None), {"inputs": jnp.asarray(inputs)}, lean=False)
  assert found.names == ("a", "b") and found.blocks.rows == (2, 1)
  np.testing.assert_array_equal(found.members[0].logits_BxSxV, np.float32(tables[0])[inputs[[0, 1, 3, 4]]])
  np.testing.assert_array_equal(found.members[1].logits_BxSxV, np.float32(tables[1])[inputs[[2, 5]]])
  unused = ensemble.Ensemble(members, ("a", "b"), (0.5, 0.5), "route", route_rows=(0, 3)).head(
      (None, None), {"inputs": jnp.asarray(inputs)}, lean=False
  )
  assert unused.names == ("b",) and len(unused.members) == 1  # a teacher without rows runs nothing


def _weights():
  return objective.LossWeights(alpha=jnp.float32(ALPHA), temperature=jnp.float32(T), beta=jnp.float32(0.0))


def _problem(seed, rows=(2, 1), groups=2):
  rng = np.random.default_rng(seed)
  batch = groups * sum(rows)
  owner = np.tile(np.repeat(np.arange(len(rows)), rows), groups)  # the teacher of each row
  return {
      "hidden": rng.standard_normal((batch, S, D)),
      "unembed": rng.standard_normal((D, V)),
      "teacher_hidden": [rng.standard_normal((batch, S, D + 1 + i)) for i in range(len(rows))],
      "teacher_unembed": [rng.standard_normal((D + 1 + i, V)) for i in range(len(rows))],
      "labels": rng.integers(0, V, (batch, S)),
      "mask": rng.random((batch, S)) > 0.2,
      "owner": owner,
      "rows": rows,
  }


def _routed_objective(p, lean):
  """The step's objective (token mean) with each teacher's head computed on its own rows only."""
  blocks = heads.RowBlocks(p["rows"])
  members = []
  for i, (h, w) in enumerate(zip(p["teacher_hidden"], p["teacher_unembed"])):
    own = blocks.take(jnp.asarray(h, jnp.float32), i)
    w = jnp.asarray(w, jnp.float32)
    members.append(heads.TeacherHidden(own, w) if lean else heads.TeacherLogits(own @ w))
  teacher = heads.TeacherSet(tuple(members), ("a", "b")[: len(members)], (1.0,) * len(members), blocks=blocks)
  return _objective_and_grads(p, teacher, lean)


def _objective_and_grads(p, teacher, lean):
  """``((token-mean objective, metrics), (d/d hidden, d/d unembed))`` of the student of ``p`` against ``teacher``."""

  def fn(hidden, unembed):
    student = heads.StudentHidden(hidden, unembed) if lean else heads.StudentLogits(hidden @ unembed)
    total, count, metrics = paths.distillation_terms(
        student, teacher, jnp.asarray(p["labels"]), jnp.asarray(p["mask"]), _weights(), OPTIONS
    )
    return total / count, metrics

  f32 = lambda x: jnp.asarray(x, jnp.float32)  # pylint: disable=unnecessary-lambda-assignment
  return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(f32(p["hidden"]), f32(p["unembed"]))


@pytest.mark.parametrize("lean", (False, True), ids=("dense", "lean"))
def test_row_blocks_score_each_row_by_its_own_teacher_like_numpy(lean):
  p = _problem(0)
  (value, metrics), grads = _routed_objective(p, lean)
  teacher_logits = [h @ w for h, w in zip(p["teacher_hidden"], p["teacher_unembed"])]
  owned = np.stack([teacher_logits[o][r] for r, o in enumerate(p["owner"])])  # each row from its own teacher
  teacher_logp = ref.log_softmax(owned / T)

  def objective_of(h, w):
    return ref.distillation_objective(teacher_logp, h @ w, p["labels"], p["mask"], ALPHA, T)

  np.testing.assert_allclose(float(value), objective_of(p["hidden"], p["unembed"]), rtol=2e-5)
  want_hidden = ref.finite_difference(lambda h: objective_of(h, p["unembed"]), p["hidden"])  # each row's own
  np.testing.assert_allclose(np.asarray(grads[0]), want_hidden, rtol=2e-3, atol=2e-5)
  student_T = ref.log_softmax(p["hidden"] @ p["unembed"] / T)
  for index, name in enumerate(("a", "b")):
    rows = p["owner"] == index
    soft = ref.divergence("forward_kl", ref.log_softmax(teacher_logits[index] / T), student_T) * T**2
    pair = metrics[metric_names.per_teacher(name, metric_names.TEACHER_SOFT_LOSS)]
    mask = p["mask"] & rows[:, None]
    np.testing.assert_allclose(float(pair[0]) / float(pair[1]), soft[mask].mean(), rtol=2e-5)
    fraction = metrics[metric_names.per_teacher(name, metric_names.TEACHER_TOKEN_FRACTION)]
    assert float(fraction[0]) == mask.sum() and float(fraction[1]) == p["mask"].sum()


@pytest.mark.parametrize("lean", (False, True), ids=("dense", "lean"))
def test_one_block_of_every_row_equals_that_teacher_alone(lean):
  p = _problem(1, rows=(3,), groups=2)
  (value, metrics), grads = _routed_objective(p, lean)
  h, w = (jnp.asarray(x, jnp.float32) for x in (p["teacher_hidden"][0], p["teacher_unembed"][0]))
  alone = heads.TeacherHidden(h, w) if lean else heads.TeacherLogits(h @ w)
  (want, want_metrics), want_grads = _objective_and_grads(p, alone, lean)
  assert float(value) == float(want)
  for got, expected in zip(grads, want_grads):
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-8)
  for name, pair in want_metrics.items():
    np.testing.assert_array_equal(np.asarray(metrics[name]), np.asarray(pair), err_msg=name)


# Four CPU devices in a fresh process: the routed layout's composition and each teacher's slice compile without a
# collective, while a plain slice of the first rows of the global batch (the naive layout) needs one.
_SHARDING_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import functools
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from maxtext_distill_plugin.loss import heads
    from maxtext_distill_plugin.training.sources import routed
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
    rows, k = (3, 1), 2
    loaded = tuple({"inputs": jax.device_put(jnp.zeros((4 * r * k, 8), jnp.int32), sharding)} for r in rows)
    compose = jax.jit(functools.partial(routed.compose, rows=rows, accumulation_steps=k), out_shardings=sharding)
    micro = jax.device_put(jnp.zeros((4 * sum(rows), 8, 16)), sharding)
    blocks = heads.RowBlocks(rows)
    take = jax.jit(lambda x: [blocks.take(x, i) for i in range(len(rows))])
    naive = jax.jit(lambda x: x[: 4 * rows[0]] * 2, out_shardings=sharding)
    for name, lowered in (("compose", compose.lower(loaded)), ("take", take.lower(micro)), ("naive", naive.lower(micro))):
      text = lowered.compile().as_text()
      found = [op for op in ("all-to-all", "all-gather", "collective-permute", "all-reduce") if op in text]
      print(name, ",".join(found) or "none")
""")


@pytest.mark.slow
def test_routed_blocks_stay_on_their_devices():
  proc = subprocess.run(
      [sys.executable, "-c", _SHARDING_SCRIPT],
      cwd=REPO,
      env=subprocess_env(),
      capture_output=True,
      text=True,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = dict(line.split() for line in proc.stdout.splitlines())
  assert found["compose"] == "none" and found["take"] == "none"
  assert found["naive"] != "none"  # the check can fail: a slice across the devices' rows moves data
