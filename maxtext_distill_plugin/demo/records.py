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

"""The demo's records: pre-tokenized ArrayRecord files that MaxText's own Grain pipeline reads.

MaxText reads them with ``dataset_type=grain``, ``grain_file_type=arrayrecord``
and ``tokenize_*_data=false``. Each record is a serialized ``tf.train.Example``
(MaxText's bundled proto, no TensorFlow) with one int64 feature, ``COLUMN``,
holding the ids of one chunk. The column is not called ``inputs``/``targets``:
the pipeline derives those from it and would delete a source column of the
same name.
"""

COLUMN = "tokens"


def serialize(ids: list[int]) -> bytes:
  """One record: a ``tf.train.Example`` with ``COLUMN`` as an int64 list (what MaxText's ``ParseFeatures`` reads)."""
  from maxtext.input_pipeline.protos import example_pb2  # pylint: disable=import-outside-toplevel

  example = example_pb2.Example()  # pylint: disable=no-member
  example.features.feature[COLUMN].int64_list.value.extend(ids)
  return example.SerializeToString()


def write_array_record(path: str, chunks: list[list[int]]) -> None:
  """Writes ``chunks`` as one ArrayRecord file (one record per group, for random access)."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel

  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")  # pylint: disable=c-extension-no-member
  try:
    for ids in chunks:
      writer.write(serialize(ids))
  finally:
    writer.close()


def read_array_record(path: str) -> list[list[int]]:
  """Reads back the ids of every record (for checks and tests)."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline.protos import example_pb2  # pylint: disable=import-outside-toplevel

  reader = array_record_module.ArrayRecordReader(path)  # pylint: disable=c-extension-no-member
  try:
    records = reader.read_all()
  finally:
    reader.close()
  out = []
  for record in records:
    example = example_pb2.Example()  # pylint: disable=no-member
    example.ParseFromString(record)
    out.append(list(example.features.feature[COLUMN].int64_list.value))
  return out
