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

"""Offline distillation: a cache of the whole vocabulary reproduces the online loss, the chunked loss the dense one;
mismatched caches are refused."""

import dataclasses
import logging

import numpy as np
import pytest

from maxtext_distill_plugin import cli
from tests.conftest import TINY_YAML, run_cli, train_in_process


def _write_cache(tmp_path_factory, teacher_checkpoint, top_k: int) -> str:
  """A cache of the tiny teacher's top ``top_k`` made by the real caching tool (tail statistics from its full logits)."""
  out = tmp_path_factory.mktemp(f"cache_k{top_k}")
  proc = run_cli(
      TINY_YAML,
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      f"offline_data_dir={out / 'cache'}",
      f"base_output_directory={out}",
      "steps=3",
      "--top-k",
      str(top_k),
      module="maxtext_distill_plugin.save_top_k_teacher_logits",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(out / "cache")


@pytest.fixture(scope="module")
def full_vocab_cache(tmp_path_factory, teacher_checkpoint):
  """k = V = 512."""
  return _write_cache(tmp_path_factory, teacher_checkpoint, 512)


@pytest.fixture(scope="module")
def top_k_cache(tmp_path_factory, teacher_checkpoint):
  """k = 16 < V: its tail mass and entropies come from the teacher's full logits."""
  return _write_cache(tmp_path_factory, teacher_checkpoint, 16)


def _as_format_1(cache_dir, out_dir) -> str:
  """The same cache without its tail entropies, as a format-1 cache reads (exact at T = 1 only)."""
  from maxtext_distill_plugin.teacher_cache import format as cache_format  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.teacher_cache import reader  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.teacher_cache import writer  # pylint: disable=import-outside-toplevel

  cache = reader.open_cache(cache_dir)
  identity = dataclasses.replace(cache.manifest.identity, tail_renyi_orders=())
  records = cache.__getitems__(range(len(cache)))
  sink = writer.HostShardWriter(out_dir, identity, process_index=0, total_steps=len(records) // identity.rows_per_step)
  for step in range(sink.total_steps):
    rows = records[step * identity.rows_per_step : (step + 1) * identity.rows_per_step]
    sink.write_step(
        step, {name: np.stack([r[name] for r in rows]) for name in rows[0] if name != cache_format.TAIL_RENYI_FIELD}
    )
  sink.close()
  return out_dir


def test_offline_loss_vanishes_for_a_student_equal_to_the_teacher_at_t2(
    tmp_path, capsys, teacher_checkpoint, top_k_cache
):
  """Student = teacher (same depth, same weights) at T = 2 on a k = 16 < V = 512 cache: soft loss ~ 0.

  Only the cache's quantisation is left: T^2 KL <= step^2 / 8 = 4.9e-4 nats per token (sparse_losses docstring).
  Before format 2 (a uniform tail) this run logged a clearly positive soft loss.
  """
  same = ("student_overrides.base_num_decoder_layers=2", f"load_parameters_path={teacher_checkpoint}", "steps=1")
  common = same + ("distill_alpha=1.0", "distill_temperature=2.0", f"offline_data_dir={top_k_cache}")
  first = _first(train_in_process(tmp_path / "same", teacher_checkpoint, *common).history)
  assert first["distill/topk_coverage"] < 0.99  # a real tail
  assert 0.0 <= first["distill/soft_loss"] < 4.9e-4, first
  # The same cache without its entropies (format 1) is refused at T = 2 before any model is built.
  old = _as_format_1(top_k_cache, str(tmp_path / "v1"))
  argv = ["train_distill", TINY_YAML, f"offline_data_dir={old}", f"base_output_directory={tmp_path / 'o'}"]
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv + ["distill_temperature=1.0", "distill_temperature_end=2.0"])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and "distill_temperature_end=2.0" in err and "renormalize" in err, err[-2000:]
  assert not (tmp_path / "o").exists()


def _first(history):
  return [h for h in history if "distill/total_loss" in h][0]


def test_offline_with_full_vocab_matches_online(tmp_path, teacher_checkpoint, full_vocab_cache):
  common = ("steps=2", "distill_alpha=0.7", "distill_temperature=2.0")
  online = _first(train_in_process(tmp_path / "on", teacher_checkpoint, *common).history)
  offline = _first(
      train_in_process(tmp_path / "off", teacher_checkpoint, *common, f"offline_data_dir={full_vocab_cache}").history
  )
  # Same first batch and the same student init: only the cache's quantisation separates the two.
  np.testing.assert_allclose(offline["distill/hard_loss"], online["distill/hard_loss"], rtol=1e-6)
  np.testing.assert_allclose(offline["distill/kl_div_T1"], online["distill/kl_div_T1"], atol=2e-3)
  np.testing.assert_allclose(offline["distill/kl_div_at_T"], online["distill/kl_div_at_T"], atol=2e-3)
  np.testing.assert_allclose(offline["distill/topk_coverage"], 1.0, atol=1e-6)
  assert "distill/teacher_loss" not in offline  # no teacher in memory, no made-up teacher CE


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["vocab_size=1024"], "vocab_size"),
        (["max_target_length=64"], "max_target_length"),
        (["distill_beta=0.5", "distill_layer_indices=[0]"], "distill_beta"),
        (["distill_teacher_weight_dtype=float32"], "distill_teacher_weight_dtype"),  # no teacher model offline
    ],
)
def test_mismatched_cache_is_refused(tmp_path, capsys, full_vocab_cache, extra, needle):
  argv = ["train_distill", TINY_YAML, f"offline_data_dir={full_vocab_cache}", f"base_output_directory={tmp_path / 'o'}"]
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv + extra)
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and needle in err and "Fix" in err, err[-2000:]
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["distill_temperature=0.25"], "distill_temperature=0.25"),
        (["distill_temperature=2.0", "distill_temperature_end=8.0"], "distill_temperature_end=8.0"),
    ],
)
def test_temperatures_beyond_the_stored_tail_orders_are_refused(tmp_path, capsys, top_k_cache, extra, needle):
  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

  argv = ["train_distill", TINY_YAML, f"offline_data_dir={top_k_cache}", f"base_output_directory={tmp_path / 'o'}"]
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv + extra)
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and needle in err and "[0.5, 4]" in err and "renormalize" in err, err[-2000:]
  assert not (tmp_path / "o").exists()
  # The renormalised loss needs no tail statistics: any T is accepted.
  assert config.build(argv + extra + ["distill_offline_tail=renormalize"]).settings.distill_offline_tail == "renormalize"


def test_offline_run_evaluates_the_student_on_the_yamls_eval_data(tmp_path, teacher_checkpoint, full_vocab_cache):
  common = ("steps=2", "eval_interval=1", "eval_steps=1", "distill_alpha=0.7", "distill_temperature=2.0")
  online = train_in_process(tmp_path / "on", teacher_checkpoint, *common).history
  offline = train_in_process(tmp_path / "off", teacher_checkpoint, *common, f"offline_data_dir={full_vocab_cache}")
  evals = [h for h in offline.history if "eval/hard_loss" in h]
  online_evals = [h for h in online if "eval/hard_loss" in h]
  assert [h["step"] for h in evals] == [h["step"] for h in online_evals] == [1, 2]
  for h, o in zip(evals, online_evals):
    # The same eval batches and, with a k = V cache, nearly the same student: only the cache's quantisation differs.
    np.testing.assert_allclose(h["eval/hard_loss"], o["eval/hard_loss"], rtol=1e-4)
    np.testing.assert_allclose(h["eval/student_perplexity"], np.exp(h["eval/hard_loss"]), rtol=1e-6)
    assert "eval/kl_div_T1" not in h  # no teacher for the held-out batches


def test_offline_run_never_builds_a_teacher(tmp_path, full_vocab_cache):
  proc = run_cli(TINY_YAML, f"offline_data_dir={full_vocab_cache}", f"base_output_directory={tmp_path}", "steps=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "no teacher in memory" in proc.stderr and "Loading teacher" not in proc.stderr


def _write_upstream_copy(cache_dir, out_dir, k):
  """Re-writes our cache in upstream's format (tf.train.Example records, best-first top-k logits, no tail)."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline.protos import example_pb2  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.teacher_cache import reader  # pylint: disable=import-outside-toplevel

  cache = reader.open_cache(cache_dir)
  out_dir.mkdir()
  sink = array_record_module.ArrayRecordWriter(str(out_dir / "teacher_top_k_part_00000_host_000.array_record"), "")
  for record in cache.__getitems__(range(len(cache))):
    best = np.argsort(-record["teacher_topk_logprobs"], axis=1)[:, :k]
    example = example_pb2.Example()  # pylint: disable=no-member
    feature = example.features.feature
    feature["top_k_indices"].int64_list.value.extend(np.take_along_axis(record["teacher_topk_ids"], best, 1).ravel())
    feature["top_k_logits"].float_list.value.extend(np.take_along_axis(record["teacher_topk_logprobs"], best, 1).ravel())
    for name in ("inputs", "targets", "inputs_position", "inputs_segmentation", "targets_segmentation"):
      feature[name].int64_list.value.extend(record[name].astype(np.int64).tolist())
    sink.write(example.SerializeToString())
  sink.close()
  return cache


def test_trains_in_place_from_an_upstream_cache(tmp_path, teacher_checkpoint, full_vocab_cache):
  upstream_dir = tmp_path / "upstream"
  _write_upstream_copy(full_vocab_cache, upstream_dir, k=16)
  result = train_in_process(tmp_path / "run", teacher_checkpoint, "steps=2", f"offline_data_dir={upstream_dir}")
  first = _first(result.history)
  assert np.isfinite(first["distill/kl_div_T1"]) and first["distill/kl_div_T1"] > 0
  # Renormalised over the top-k with no tail stored: the coverage metric cannot claim any tail.
  np.testing.assert_allclose(first["distill/topk_coverage"], 1.0)
  assert len(result.history) >= 2


@pytest.mark.parametrize(
    "cache,tail",
    (("full_vocab_cache", "auto"), ("top_k_cache", "bucket"), ("top_k_cache", "renormalize")),
)
def test_chunked_offline_loss_matches_dense(tmp_path, teacher_checkpoint, request, caplog, cache, tail):
  """The lean loss from hidden states against the cached top-k: the same losses, metrics and updates, step by step."""
  common = (
      "steps=3",
      "distill_alpha=0.7",
      "distill_temperature=2.0",
      f"distill_offline_tail={tail}",
      "distill_seq_chunk=12",  # S = 32 and V = 512 divide by neither chunk
      "distill_vocab_chunk=100",
      f"offline_data_dir={request.getfixturevalue(cache)}",
  )
  with caplog.at_level(logging.INFO):
    dense = train_in_process(tmp_path / "dense", teacher_checkpoint, *common, "distill_loss_impl=dense").history
    assert "Distillation loss: dense" in caplog.text
    caplog.clear()
    chunked = train_in_process(tmp_path / "chunked", teacher_checkpoint, *common, "distill_loss_impl=chunked").history
    assert "Distillation loss: chunked" in caplog.text
  dense, chunked = ([h for h in history if "distill/total_loss" in h] for history in (dense, chunked))
  assert len(dense) == len(chunked) == 3
  names = ("distill/total_loss", "distill/kl_div_at_T", "distill/kl_div_T1", "distill/hard_loss", "grad_norm")
  for step, (want, got) in enumerate(zip(dense, chunked)):
    for name in names + ("distill/topk_coverage",):
      np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=1e-6, err_msg=f"step {step}: {name}")
    assert want["distill/kl_div_at_T"] > 1e-3  # a real KL, not a trivially matching zero
  # The steps did update the student: step 2's loss is not step 0's.
  assert abs(dense[2]["distill/total_loss"] - dense[0]["distill/total_loss"]) > 1e-4
