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

"""The training rows split by teacher: one local file per teacher, its rows in their original order.

JSON lines are copied line for line (the bytes MaxText's pipeline would have read), Parquet rows through Arrow. The
split is a pure function of the training files, so a resumed run (or another host) writes the same files; each is
written to a temporary name and renamed, so a reader never sees half a file.
"""

import os

from absl import logging


def write_split(hf_path: str, files: list[str], routes: list, names: tuple[str, ...], directory: str) -> dict[str, str]:
  """Writes each teacher's rows of ``files`` (``routes[j]``: the teacher of row ``j``) under ``directory``.

  Returns ``{name: path}`` for every teacher with rows.
  """
  os.makedirs(directory, exist_ok=True)
  suffix = "parquet" if hf_path == "parquet" else "jsonl"
  paths = {name: os.path.join(directory, f"{name}.{suffix}") for name in names if name in set(routes)}
  if hf_path == "parquet":
    _split_parquet(files, routes, paths)
  else:
    _split_json_lines(files, routes, paths)
  logging.info("Routing: the training rows split by teacher into %s", sorted(paths.values()))
  return paths


def _split_json_lines(files: list[str], routes: list, paths: dict[str, str]) -> None:
  lines = {name: [] for name in paths}
  row = 0
  for path in files:
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.strip():
          lines[routes[row]].append(line if line.endswith("\n") else line + "\n")
          row += 1
  for name, path in paths.items():
    _replace(path, lambda f, name=name: f.write("".join(lines[name]).encode("utf-8")))


def _split_parquet(files: list[str], routes: list, paths: dict[str, str]) -> None:
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

  table = pa.concat_tables([pq.read_table(path) for path in files])
  for name, path in paths.items():
    mask = pa.array([route == name for route in routes])
    _replace(path, lambda f, name=name, mask=mask: pq.write_table(table.filter(mask), f))


def _replace(path: str, write) -> None:
  temporary = f"{path}.{os.getpid()}.tmp"
  with open(temporary, "wb") as f:
    write(f)
  os.replace(temporary, path)
