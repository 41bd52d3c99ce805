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

"""Refuses on-policy runs that cannot sample, before any model is built (``config.cross_check`` calls it).

An on-policy step needs three things the config decides alone:

* a teacher in memory to score the samples (an offline cache only scores the sequences it was written from);
* prompts in the data. MaxText's SFT pipeline (``use_sft`` with ``sft_train_on_completion_only``) masks the prompt
  out of ``targets_segmentation``, so a row's prompt is every token before its first scored label. Without
  completion-only SFT nothing in a batch says where a prompt ends;
* one conversation per row (``packing=False``): a packed row holds several prompts and completions back to back,
  and a completion sampled after the first prompt would overwrite the rest of the row;
* room for the completion: the prompt bucket ``max_target_length - distill_sample_max_new_tokens`` must hold at
  least one token.
"""

from maxtext_distill_plugin import errors


def prompt_bucket(config, settings) -> int:
  """Prompt positions per row: ``max_target_length - distill_sample_max_new_tokens``."""
  return int(config.max_target_length) - int(settings.distill_sample_max_new_tokens)


def check(student, settings, *, offline: bool) -> None:
  """Raises :class:`errors.ConfigError` (exit 2) for an on-policy run the data or the setup cannot serve."""
  if not settings.on_policy:
    return
  fraction = settings.distill_on_policy_fraction
  if offline:
    raise errors.ConfigError(
        "distill_on_policy_fraction",
        fraction,
        "on-policy distillation scores fresh samples with the teacher, and an offline cache holds no teacher: unset"
        " offline_data_dir and set teacher_overrides.load_parameters_path, or set distill_on_policy_fraction=0.",
    )
  if getattr(student, "use_multimodal", False):
    raise errors.ConfigError(
        "use_multimodal", True, "on-policy sampling is text-only; set distill_on_policy_fraction=0 for multimodal data."
    )
  if not student.use_sft or not student.sft_train_on_completion_only:
    key = "use_sft" if not student.use_sft else "sft_train_on_completion_only"
    raise errors.ConfigError(
        key,
        getattr(student, key),
        f"distill_on_policy_fraction={fraction} samples completions of the data's prompts, and only completion-only"
        " SFT data marks where a prompt ends: use SFT data (prompt/completion or chat messages) with use_sft=True and"
        " sft_train_on_completion_only=True, or set distill_on_policy_fraction=0.",
    )
  if student.packing:
    raise errors.ConfigError(
        "packing",
        True,
        "on-policy sampling continues each row's prompt with a new completion; a packed row holds several"
        " conversations back to back, so set packing=False.",
    )
  new_tokens = settings.distill_sample_max_new_tokens
  if prompt_bucket(student, settings) < 1:
    raise errors.ConfigError(
        "distill_sample_max_new_tokens",
        new_tokens,
        f"prompt and completion share max_target_length={student.max_target_length} positions per row; set"
        f" distill_sample_max_new_tokens below {student.max_target_length} (or raise max_target_length) so prompts"
        " keep max_target_length - distill_sample_max_new_tokens positions.",
    )
