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

"""Routing (``distill_teacher_mixture=route``): the route column read and checked, and each teacher's data stream.

MaxText's input pipelines keep only their token columns, so the route cannot travel inside the batch. Instead the
training rows are split by the route column (``distill_teacher_route_column``, each row naming its teacher) into one
local file per teacher (:mod:`training.sources.route_files`), and each teacher's rows get their own MaxText pipeline,
of ``rows`` rows per device and micro-batch: a student config that differs from the run's only in
``hf_train_files`` and ``per_device_batch_size``. :mod:`training.sources.routed` stacks the streams into each global
batch as static row blocks.

The rows of a device's micro-batch are shared out in proportion to the teachers' example counts (largest
remainders, at least one row for every teacher that has examples): stratified sampling with proportional allocation,
so the expected loss is the one over all examples, as with one mixed stream, with no between-teacher variance in
the batch composition. Everything here runs before any model is built; a bad route is :class:`errors.ConfigError`.
"""

import collections
import dataclasses
import glob
import json
import os
import tempfile
from typing import Any, Callable

from absl import logging

from maxtext_distill_plugin import errors

# Route files are read whole at config time: JSON lines and Parquet, the formats whose rows are read one by one.
ROUTE_FORMATS = ("json", "parquet")


@dataclasses.dataclass(frozen=True)
class RouteStream:
  """One teacher's share of each batch: its rows per device and micro-batch, and the student config reading them."""

  name: str
  rows: int
  examples: int
  config: Any  # the student's MaxText config over this teacher's rows; None for a teacher without rows


def train_files(config) -> list[str]:
  """The training files in the order they are read (sorted glob matches)."""
  return sorted(glob.glob(str(config.hf_train_files)))


def read_routes(config, column: str) -> list:
  """The value of ``column`` in every training row, in file order; refuses data without a readable column."""
  kind = str(getattr(config.dataset_type, "value", config.dataset_type))
  if kind != "hf" or str(config.hf_path) not in ROUTE_FORMATS or not config.hf_train_files:
    raise errors.ConfigError(
        "distill_teacher_mixture",
        "route",
        "routing splits the training rows by their teacher column, which needs local rows: set dataset_type=hf"
        f" hf_path={'|'.join(ROUTE_FORMATS)} hf_train_files=<local files> (got dataset_type={kind}"
        f" hf_path={config.hf_path}), or use distill_teacher_mixture=distribution or loss.",
    )
  values = []
  for path in train_files(config):
    found = _read_column(str(config.hf_path), path, column)
    if found is None:
      raise errors.ConfigError(
          "distill_teacher_route_column",
          column,
          f"{path} has no column {column!r}: give every training row the name of its teacher in that column, or set"
          " distill_teacher_route_column to the column that holds it.",
      )
    values.extend(found)
  return values


def _read_column(hf_path: str, path: str, column: str) -> list | None:
  if hf_path == "parquet":
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    schema = pq.read_schema(path)
    return pq.read_table(path, columns=[column]).column(column).to_pylist() if column in schema.names else None
  values = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        if column not in row:
          return None
        values.append(row[column])
  return values


def count_routes(values: list, names: tuple[str, ...], column: str) -> collections.Counter:
  """Examples per teacher; a value that names no teacher is refused."""
  counts = collections.Counter(values)
  unknown = sorted({repr(v) for v in counts if v not in names})
  if unknown:
    raise errors.ConfigError(
        "distill_teacher_route_column",
        column,
        f"its values {unknown[:5]} name no teacher: each row's {column} must be one of the names in teachers:"
        f" {list(names)}.",
    )
  return counts


def allocate_rows(counts: dict[str, int], names: tuple[str, ...], rows: int) -> tuple[int, ...]:
  """``rows`` rows shared out in proportion to ``counts`` (largest remainders), at least one per teacher with
  examples; ties go to the earlier teacher in ``names``."""
  present = [name for name in names if counts.get(name, 0) > 0]
  if rows < len(present):
    raise errors.ConfigError(
        "per_device_batch_size",
        rows,
        f"routing gives every teacher with examples ({present}) its own rows on each device: set"
        f" per_device_batch_size >= {len(present)}.",
    )
  total = sum(counts.get(name, 0) for name in names)
  exact = {name: rows * counts.get(name, 0) / total for name in names}
  share = {name: max(1, int(exact[name])) if name in present else 0 for name in names}
  order = sorted(present, key=lambda n: (-(exact[n] - int(exact[n])), names.index(n)))
  while sum(share.values()) < rows:
    for name in order:
      if sum(share.values()) < rows:
        share[name] += 1
  while sum(share.values()) > rows:  # the at-least-one rule overshot: take from the largest shares
    largest = max(present, key=lambda n: (share[n], -names.index(n)))
    share[largest] -= 1
  return tuple(share[name] for name in names)


def check_batch_shape(student) -> int:
  """Rows per device and micro-batch; refuses shapes whose loaded rows are not all trained on."""
  per_device = float(student.per_device_batch_size)
  loaded, trained = int(student.global_batch_size_to_load), int(student.global_batch_size_to_train_on)
  if not per_device.is_integer() or loaded != trained:
    raise errors.ConfigError(
        "per_device_batch_size",
        student.per_device_batch_size,
        "routing composes each batch from whole rows per device: use an integer per_device_batch_size and"
        " expansion_factor_real_data=-1.",
    )
  if student.eval_interval > 0:
    raise errors.ConfigError(
        "eval_interval",
        student.eval_interval,
        "held-out batches are not routed yet (MaxText's eval pipeline drops the route column): set eval_interval=-1"
        " with distill_teacher_mixture=route.",
    )
  return int(per_device)


def route_directory(student) -> str:
  """Where the per-teacher files go: the run's directory when it is local, else a local temporary directory."""
  base = str(student.base_output_directory)
  if "://" in base:
    return os.path.join(tempfile.gettempdir(), "maxtext-distill-routes", str(student.run_name))
  return os.path.join(base, str(student.run_name), "routed_data")


def plan_streams(student, names: tuple[str, ...], column: str, reinit: Callable[[dict], Any]) -> tuple[RouteStream, ...]:
  """Checks the route column and builds one stream per teacher (``reinit``: the student config with extra keys).

  Writes the per-teacher files (deterministic: the same data give the same files, so a resumed run reads the same
  rows).
  """
  from maxtext_distill_plugin.training.sources import route_files  # pylint: disable=import-outside-toplevel

  rows = check_batch_shape(student)
  values = read_routes(student, column)
  counts = count_routes(values, names, column)
  shares = allocate_rows(counts, names, rows)
  paths = route_files.write_split(str(student.hf_path), train_files(student), values, names, route_directory(student))
  streams = []
  for name, share in zip(names, shares):
    config = reinit({"hf_train_files": paths[name], "per_device_batch_size": share}) if share else None
    streams.append(RouteStream(name, share, counts.get(name, 0), config))
    logging.info(
        "Routing: teacher %s has %d of %d examples: %d of %d rows per device",
        name,
        counts.get(name, 0),
        len(values),
        share,
        rows,
    )
  return tuple(streams)
