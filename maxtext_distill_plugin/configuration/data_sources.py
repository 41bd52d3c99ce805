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
  ``chat_template_path`` file, or the tokenizer's own.

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
import os
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
