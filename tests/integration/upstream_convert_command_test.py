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

"""The README's command that converts upstream's teacher cache runs as written (it once named a module without a
``__main__``)."""

import pathlib
import re
import shlex
import subprocess
import sys

from array_record.python import array_record_module
import numpy as np

from maxtext_distill_plugin.teacher_cache import codec
from maxtext_distill_plugin.teacher_cache import reader
from tests.conftest import REPO, subprocess_env

_LENGTH, _K, _IDS = 16, 4, 300


def _readme_command() -> list[str]:
  text = (REPO / "README.md").read_text(encoding="utf-8")
  match = re.search(r"^python -m maxtext_distill_plugin\.teacher_cache\.upstream_interop .*$", text, re.MULTILINE)
  assert match, "the README no longer shows the convert command"
  return shlex.split(match.group(0))


def _write_upstream_cache(directory: pathlib.Path, rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """Upstream's shard layout: one tf.train.Example per sequence (MaxText's own copy of the proto)."""
  from maxtext.input_pipeline.protos import example_pb2  # pylint: disable=import-outside-toplevel

  directory.mkdir()
  rng = np.random.default_rng(3)
  sink = array_record_module.ArrayRecordWriter(
      str(directory / "teacher_top_k_part_00000_host_000.array_record"), "group_size:1"
  )
  written = []
  for _ in range(rows):
    ids = np.stack([rng.choice(_IDS, _K, replace=False) for _ in range(_LENGTH)])
    logits = np.sort(rng.normal(size=(_LENGTH, _K)).astype(np.float32) * 3, axis=1)[:, ::-1]  # best first
    example = example_pb2.Example()  # pylint: disable=no-member
    inputs = rng.integers(0, _IDS, _LENGTH)
    for name, value in (("inputs", inputs), ("targets", np.roll(inputs, -1)), ("top_k_indices", ids)):
      example.features.feature[name].int64_list.value.extend(value.ravel().astype(np.int64).tolist())
    example.features.feature["top_k_logits"].float_list.value.extend(logits.ravel().tolist())
    sink.write(example.SerializeToString())
    written.append((ids, logits))
  sink.close()
  return written


def test_readme_convert_command_runs_and_the_cache_holds_the_teachers_top_k(tmp_path):
  command = _readme_command()
  assert command[:3] == ["python", "-m", "maxtext_distill_plugin.teacher_cache.upstream_interop"]
  source, target = tmp_path / "upstream_cache", tmp_path / "cache"
  written = _write_upstream_cache(source, rows=3)
  args = [str(source) if a == "/data/upstream_cache" else str(target) if a == "/data/cache" else a for a in command]
  proc = subprocess.run(
      [sys.executable, *args[1:]], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, check=False
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "3 sequences in 1 shards, k=4" in proc.stdout
  cache = reader.open_cache(str(target))
  assert len(cache) == 3 and cache.manifest.identity.vocab_size == int(command[command.index("--vocab-size") + 1])
  for index, (ids, logits) in enumerate(written):
    record = cache[index]
    order = np.argsort(ids, axis=1)  # the cache stores each position's ids ascending
    np.testing.assert_array_equal(record["teacher_topk_ids"], np.take_along_axis(ids, order, 1))
    renormalised = logits - np.log(np.exp(logits.astype(np.float64)).sum(1, keepdims=True))
    error = np.abs(record["teacher_topk_logprobs"] - np.take_along_axis(renormalised, order, 1)).max()
    assert error <= codec.DEFAULT_LOGPROB_STEP, error  # the bound of the cache codec (teacher_cache_test.py)
