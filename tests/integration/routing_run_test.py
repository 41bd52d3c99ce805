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


"""Routing through the real config and trainer: a teacher column in local JSON lines, refusals before any model is
built, a routed run, and (``--slow``) routing against one-teacher runs on the same rows and a resumed routed run."""

import json
import os
import shutil

import numpy as np
import pytest

from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.training import trainer
from tests.conftest import committed_steps, read_metrics, train_in_process
from tests.integration import data_testing
from tests.integration import multi_teacher_run_test

_ROWS = 120
_LOSSES = ("distill/total_loss", "distill/soft_loss", "distill/hard_loss", "distill/teacher_loss", "grad_norm")


def _write_rows(path, routes, column="teacher_id") -> str:
  texts = data_testing.sentences(len(routes))
  with open(path, "w", encoding="utf-8") as f:
    for text, route in zip(texts, routes):
      f.write(json.dumps({"text": text, column: route}) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
  return data_testing.train_hf_tokenizer(str(tmp_path_factory.mktemp("tok")), data_testing.sentences(_ROWS))


def _mixed_routes(count=_ROWS):
  return ["code" if i % 4 == 0 else "math" for i in range(count)]  # 3 : 1, so 3 and 1 rows of 4 per device


def _data_args(train, tokenizer_path, *extra):
  return [
      "dataset_type=hf",
      "hf_path=json",
      f"hf_train_files={train}",
      f"tokenizer_path={tokenizer_path}",
      "per_device_batch_size=4",
      *extra,
  ]


def _build(tmp_path, checkpoint, train, tokenizer_path, *extra):
  os.makedirs(tmp_path, exist_ok=True)
  yaml_path = multi_teacher_run_test._yaml(tmp_path, checkpoint, "distill_teacher_mixture: route\n")  # pylint: disable=protected-access
  argv = multi_teacher_run_test._argv(tmp_path, yaml_path, *_data_args(train, tokenizer_path, *extra))  # pylint: disable=protected-access
  return config.build(argv)


REFUSED = [
    pytest.param(
        {"routes": ["math", "poetry"] * 4},
        (),
        "distill_teacher_route_column=.*'poetry'",
        id="unknown_teacher",
        marks=pytest.mark.slow,  # route_checks.count_routes is unit-tested in the default suite
    ),
    pytest.param({"column": "domain"}, (), "distill_teacher_route_column='teacher_id'", id="missing_column"),
    pytest.param({}, ("dataset_type=synthetic",), "distill_teacher_mixture='route'", id="synthetic_data"),
    pytest.param(
        {},
        ("eval_interval=2", "hf_eval_files={train}"),
        "eval_interval",
        id="held_out_batches",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        {}, ("per_device_batch_size=1",), "per_device_batch_size", id="fewer_rows_than_teachers", marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize("data,cli,match", REFUSED)
def test_bad_routes_are_refused_before_any_model_is_built(tmp_path, tokenizer, data, cli, match):
  checkpoint = multi_teacher_run_test._fake_checkpoint(tmp_path)  # pylint: disable=protected-access
  train = _write_rows(tmp_path / "train.jsonl", data.get("routes", _mixed_routes(8)), data.get("column", "teacher_id"))
  with pytest.raises(ValueError, match=match) as raised:
    _build(tmp_path, checkpoint, train, tokenizer, *(c.format(train=train) for c in cli))
  assert "Fix:" in str(raised.value)


def _by_step(path) -> dict[int, dict]:
  return {r["step"]: r for r in read_metrics(path) if "distill/total_loss" in r}


def _routed_run(tmp_path, checkpoint, train, tokenizer_path, *extra) -> dict[int, dict]:
  metrics = tmp_path / "routed.jsonl"
  trainer.train(_build(tmp_path, checkpoint, train, tokenizer_path, f"metrics_file={metrics}", *extra))
  return _by_step(metrics)


@pytest.mark.slow  # 25-50 s; the row layout, slicing and losses are unit-tested in tests/unit/routing_test.py
def test_routed_run_gives_each_teacher_its_rows(tmp_path, teacher_checkpoint, tokenizer):
  routes = _mixed_routes()
  train = _write_rows(tmp_path / "train.jsonl", routes)
  logged = _routed_run(tmp_path, teacher_checkpoint, train, tokenizer, "steps=2", "packing=false")
  assert sorted(logged) == [1, 2]
  with open(train, encoding="utf-8") as f:
    lines = f.readlines()
  for name in ("math", "code"):  # each teacher's file: its rows, in their order, byte for byte
    with open(tmp_path / "multi" / "routed_data" / f"{name}.jsonl", encoding="utf-8") as f:
      assert f.readlines() == [line for line, route in zip(lines, routes) if route == name]
  for h in logged.values():
    fractions = [h[f"distill/teacher/{name}/token_fraction"] for name in ("math", "code")]
    np.testing.assert_allclose(sum(fractions), 1.0, rtol=1e-6)
    assert fractions[0] > fractions[1] > 0.0  # 3 rows of math, 1 of code on the device
    for name in _LOSSES:
      assert np.isfinite(h[name]), name


@pytest.mark.slow
def test_routing_every_row_to_one_teacher_equals_a_one_teacher_run(tmp_path, teacher_checkpoint, tokenizer):
  train = _write_rows(tmp_path / "train.jsonl", ["math"] * _ROWS)
  routed = _routed_run(tmp_path / "routed", teacher_checkpoint, train, tokenizer, "steps=3")
  one_metrics = tmp_path / "one.jsonl"
  train_in_process(
      tmp_path / "one", teacher_checkpoint, "steps=3", f"metrics_file={one_metrics}", *_data_args(train, tokenizer)
  )
  one = _by_step(one_metrics)
  assert sorted(routed) == sorted(one) == [1, 2, 3]
  for step, h in one.items():
    for name in _LOSSES:
      np.testing.assert_allclose(routed[step][name], h[name], rtol=1e-6, err_msg=f"{name} at step {step}")
    assert routed[step]["distill/teacher/math/token_fraction"] == 1.0
    assert "distill/teacher/code/token_fraction" not in routed[step]  # a teacher without rows runs nothing


@pytest.mark.slow
def test_each_teachers_loss_on_its_rows_equals_that_teacher_alone_on_them(tmp_path, teacher_checkpoint, tokenizer):
  """Step 1 (the student as initialised): each teacher's routed loss against a one-teacher run on its rows alone."""
  train = _write_rows(tmp_path / "train.jsonl", _mixed_routes())
  routed = _routed_run(tmp_path / "routed", teacher_checkpoint, train, tokenizer, "steps=1")
  for name, rows in (("math", 3), ("code", 1)):
    own_rows = tmp_path / "routed" / "multi" / "routed_data" / f"{name}.jsonl"
    metrics = tmp_path / f"{name}.jsonl"
    args = [*_data_args(own_rows, tokenizer), f"per_device_batch_size={rows}", f"metrics_file={metrics}", "steps=1"]
    train_in_process(tmp_path / name, teacher_checkpoint, *args)
    alone = _by_step(metrics)[1]
    for key, want in (("soft_loss", "distill/soft_loss"), ("teacher_nll", "distill/teacher_loss")):
      np.testing.assert_allclose(routed[1][f"distill/teacher/{name}/{key}"], alone[want], rtol=1e-6, err_msg=name)


@pytest.mark.slow
def test_resumed_routed_run_logs_the_same_losses(tmp_path, teacher_checkpoint, tokenizer):
  train = _write_rows(tmp_path / "train.jsonl", _mixed_routes())
  common = ("steps=4", "checkpoint_period=1", f"jax_cache_dir={tmp_path / 'jax-cache'}")
  reference = _routed_run(tmp_path / "full", teacher_checkpoint, train, tokenizer, *common)
  assert len({round(r["distill/teacher_loss"], 6) for r in reference.values()}) == 4  # every step another batch
  shutil.copytree(tmp_path / "full" / "multi", tmp_path / "resumed" / "multi")
  checkpoints = tmp_path / "resumed" / "multi" / "checkpoints"
  for step in committed_steps(checkpoints):
    if step > 1:
      shutil.rmtree(checkpoints / str(step))
  resumed = _routed_run(tmp_path / "resumed", teacher_checkpoint, train, tokenizer, *common)
  assert sorted(resumed) == [3, 4]
  for step, record in resumed.items():
    for name in (*_LOSSES, "distill/teacher/math/soft_loss", "distill/teacher/code/soft_loss"):
      np.testing.assert_allclose(record[name], reference[step][name], rtol=1e-5, err_msg=f"{name} at step {step}")
