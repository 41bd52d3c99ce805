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

"""The student's data keys, checked before any model is built; and the process state MaxText's pipelines assume.

MaxText's own HF pipeline (``dataset_type=hf``) reads the data; this module
only refuses what it would fail on late or fetch from the network:

* ``hf_path`` is a local file format (``json``, ``parquet``, ``arrow``, ``csv``,
  ``text``) with ``hf_train_files`` / ``hf_eval_files`` naming existing local
  files or globs, or a local dataset directory. A hub name is refused: nothing
  is downloaded at run time.
* Local files form the ``train`` split of the HF datasets library, so
  ``train_split`` must be ``train`` with ``hf_train_files`` (MaxText already
  sets the eval split itself when ``hf_eval_files`` is given).
* ``tokenizer_path`` is a local Hugging Face tokenizer (a directory with
  ``tokenizer.json`` / ``tokenizer_config.json``, e.g. the wheel's
  ``maxtext/assets/tokenizers/qwen3-tokenizer``); its size must fit
  ``vocab_size``, since an id past the embedding table would be clamped silently.
* SFT (``use_sft``) needs a chat template: the ``chat_template`` key, a
  ``chat_template_path`` file, or the tokenizer's own; and conversational
  columns (lists of ``{"role", "content"}`` turns). The first record of a
  JSON-lines or Parquet train file is read: plain-string ``prompt`` /
  ``completion`` columns, which MaxText rejects after the models are built,
  are refused with a command that converts them to the ``messages`` format.

``tfds`` and ``c4_mlperf`` need TensorFlow, a large optional dependency left out
of the pinned set: without it they are refused with the ``pip install`` line.

Hub access is also switched off for the process (``HF_HUB_OFFLINE``,
``HF_DATASETS_OFFLINE``), so a key this module does not know about cannot
trigger a download either.

Grain's multi-process workers (``grain_worker_count >= 1``, MaxText's default)
read absl flags in the child, so the flags are marked parsed here too
(:func:`_compat.ensure_absl_flags_parsed`), for runs that build configs without the CLI.
"""

import glob
import importlib.util
import json
import os
import shlex
import sys

from maxtext_distill_plugin import _compat
from maxtext_distill_plugin import errors

# Builders of the HF datasets library that read local files named by hf_train_files / hf_eval_files.
LOCAL_FORMATS = ("json", "parquet", "arrow", "csv", "text")
DATASETS_PIN = "datasets==5.2.0"
TENSORFLOW_PINS = "tensorflow-cpu tensorflow-datasets"


def check_student_data(config) -> None:
  """Refuses data keys the run cannot serve (exit 2 through :class:`errors.ConfigError`) and prepares the process."""
  _compat.ensure_absl_flags_parsed()  # config.build runs without the CLI in the demo and tests
  kind = str(getattr(config.dataset_type, "value", config.dataset_type))
  if kind == "hf":
    check_hf(config)
  elif kind in ("tfds", "c4_mlperf"):
    missing = [name for name in ("tensorflow", "tensorflow_datasets") if importlib.util.find_spec(name) is None]
    if missing:
      raise errors.ConfigError(
          "dataset_type",
          kind,
          f"MaxText's {kind} pipeline needs {' and '.join(missing)}, large packages that the pinned CPU set leaves out:"
          f" pip install {TENSORFLOW_PINS}; or convert the data to ArrayRecord or Parquet and use dataset_type=grain"
          " or dataset_type=hf.",
      )


def check_hf(config) -> None:
  """The checks of ``dataset_type=hf`` listed in the module docstring."""
  if importlib.util.find_spec("datasets") is None:
    raise errors.ConfigError(
        "dataset_type",
        "hf",
        f"MaxText's HF pipeline needs the HF datasets package: pip install '{DATASETS_PIN}' (pinned in"
        " requirements/lock.txt, so tools/bootstrap.sh installs it; or the plugin's [hf] extra), or use"
        " dataset_type=grain.",
    )
  _go_offline()
  path = str(config.hf_path)
  local_format = path in LOCAL_FORMATS
  if not local_format and not os.path.isdir(path):
    raise errors.ConfigError(
        "hf_path",
        path,
        f"datasets are read from local files only: set hf_path to one of {'|'.join(LOCAL_FORMATS)} with"
        " hf_train_files=/data/train-*.jsonl (and hf_eval_files), or to a local dataset directory. For a hub dataset,"
        " download it once beforehand (e.g. `huggingface-cli download --repo-type dataset NAME --local-dir DIR`).",
    )
  if local_format and not config.hf_train_files:
    raise errors.ConfigError(
        "hf_train_files",
        config.hf_train_files,
        f"hf_path={path} reads local files: name them, e.g. hf_train_files=/data/train.jsonl.",
    )
  for key in ("hf_train_files", "hf_eval_files"):
    pattern = getattr(config, key)
    if pattern and not glob.glob(str(pattern)):
      raise errors.ConfigError(key, pattern, "no file matches: give an existing local file or glob.")
  if config.hf_train_files and config.train_split != "train":
    raise errors.ConfigError(
        "train_split", config.train_split, "set train_split=train: the files of hf_train_files are the 'train' split."
    )
  if local_format and config.eval_interval > 0 and not config.hf_eval_files:
    raise errors.ConfigError(
        "hf_eval_files", config.hf_eval_files, "name the held-out files (hf_eval_files=...), or set eval_interval=-1."
    )
  tokenizer = _local_tokenizer(str(config.tokenizer_path))
  if len(tokenizer) > int(config.vocab_size):
    raise errors.ConfigError(
        "vocab_size",
        config.vocab_size,
        f"tokenizer_path={config.tokenizer_path} has {len(tokenizer)} ids: set vocab_size >= {len(tokenizer)} or use a"
        " tokenizer of this model's vocabulary.",
    )
  if config.use_sft and not (config.chat_template or config.chat_template_path or tokenizer.chat_template):
    raise errors.ConfigError(
        "chat_template",
        config.chat_template,
        "use_sft=True formats conversations with a chat template: set chat_template (a Jinja2 string) or"
        " chat_template_path, or use a tokenizer that ships one.",
    )
  if config.use_sft and local_format:
    _check_conversational(config, path)


def _check_conversational(config, hf_path: str) -> None:
  """Refuses SFT columns of plain strings (MaxText needs lists of turns), reading the first train record only."""
  columns = list(config.train_data_columns)
  # MaxText converts question/answer columns and a formatting function's output itself.
  if {"question", "answer"} <= set(columns) or config.formatting_func_path:
    return
  record = _first_record(hf_path, sorted(glob.glob(str(config.hf_train_files)))[0])
  if record is None:
    return
  if any(_is_turn_list(record.get(column)) for column in columns):
    return
  plain = [c for c in columns if isinstance(record.get(c), str)]
  if sorted(plain) != ["completion", "prompt"]:
    raise errors.ConfigError(
        "train_data_columns",
        columns,
        'use_sft=True needs conversational columns: a list of {"role": ..., "content": ...} turns per row, e.g.'
        f' one column {{"messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}]}} with'
        f" train_data_columns=['messages']; the first record of {config.hf_train_files} has {sorted(record)} with"
        f" {columns} not of that form.",
    )
  source = sorted(glob.glob(str(config.hf_train_files)))[0]
  target = os.path.splitext(source)[0] + "-messages.jsonl"
  raise errors.ConfigError(
      "hf_train_files",
      config.hf_train_files,
      "use_sft=True needs conversational data, and its prompt/completion columns hold plain strings (MaxText would"
      " stop with 'Dataset is not in conversational format' after building the models). Convert each file to the"
      f" messages format and train on it:\n  {convert_command(source, target)}\n  then set"
      f" hf_train_files={target} train_data_columns=['messages'] (and the same for hf_eval_files).",
  )


# One line, so that the command can be copied from the message; double quotes only, so that it quotes cleanly.
_CONVERT_SCRIPT = (
    "import json, sys; rows = (json.loads(line) for line in sys.stdin if line.strip());"
    ' [print(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},'
    ' {"role": "assistant", "content": r["completion"]}]})) for r in rows]'
)


def convert_command(source: str, target: str) -> str:
  """A shell command that rewrites plain prompt/completion JSON lines as ``messages`` conversations."""
  return f"python -c {shlex.quote(_CONVERT_SCRIPT)} < {shlex.quote(source)} > {shlex.quote(target)}"


def _is_turn_list(value) -> bool:
  return (
      isinstance(value, list)
      and bool(value)
      and all(isinstance(t, dict) and {"role", "content"} <= set(t) for t in value)
  )


def _first_record(hf_path: str, file: str) -> dict | None:
  """The first row of a JSON-lines or Parquet file; None for other formats (MaxText's pipeline then decides)."""
  if hf_path == "json":
    with open(file, encoding="utf-8") as f:
      for line in f:
        if line.strip():
          try:
            row = json.loads(line)
          except json.JSONDecodeError:
            return None  # one JSON document rather than JSON lines
          return row if isinstance(row, dict) else None
    return None
  if hf_path == "parquet":
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    rows = pq.ParquetFile(file).read_row_group(0).slice(0, 1).to_pylist()
    return rows[0] if rows else None
  return None


def _local_tokenizer(path: str):
  if not os.path.isdir(path):
    raise errors.ConfigError(
        "tokenizer_path",
        path,
        "dataset_type=hf loads a Hugging Face tokenizer from a local directory (tokenizer.json/tokenizer_config.json),"
        " e.g. <site-packages>/maxtext/assets/tokenizers/qwen3-tokenizer; hub names are not downloaded.",
    )
  import transformers  # pylint: disable=import-outside-toplevel

  try:
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
  except (OSError, ValueError) as e:
    raise errors.ConfigError(
        "tokenizer_path", path, f"it is not a Hugging Face tokenizer directory ({type(e).__name__}: {e})."
    ) from None


def _go_offline() -> None:
  """No hub access from this process: set before the HF libraries read it, and on them when already imported."""
  os.environ["HF_HUB_OFFLINE"] = "1"
  os.environ["HF_DATASETS_OFFLINE"] = "1"
  constants = sys.modules.get("huggingface_hub.constants")
  if constants is not None:
    constants.HF_HUB_OFFLINE = True
