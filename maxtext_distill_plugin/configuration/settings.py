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

"""The typed ``distill_*`` section: every key of the spec, its default and its checks.

Independent of MaxText so the math layers and the tools can use it alone. Each
error names the key, the bad value and the fix.
"""

from typing import Literal

import pydantic
from pydantic import Field

from maxtext_distill_plugin.loss import divergences
from maxtext_distill_plugin.loss.schedules import SCHEDULE_KINDS

ScheduleKind = Literal["constant", "linear", "cosine"]


class DistillSettings(pydantic.BaseModel):
  """Loss weights, their schedules and the feature-loss selection."""

  model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

  distill_alpha: float = Field(0.5, description="Weight of KL(teacher_T || student_T) * T^2; 1 - alpha weighs the CE.")
  distill_alpha_end: float | None = Field(None, description="Alpha at the last step; None keeps alpha fixed.")
  distill_alpha_schedule: ScheduleKind = Field("constant", description="constant | linear | cosine.")
  distill_temperature: float = Field(1.0, description="Softmax temperature T of the soft loss.")
  distill_temperature_end: float | None = Field(None, description="T at the last step; None keeps T fixed.")
  distill_temperature_schedule: ScheduleKind = Field("constant", description="constant | linear | cosine.")
  distill_beta: float = Field(0.0, description="Weight of the out_projection feature loss (additive).")
  distill_beta_end: float | None = Field(None, description="Beta at the last step; None keeps beta fixed.")
  distill_beta_schedule: ScheduleKind = Field("constant", description="constant | linear | cosine.")
  distill_divergence: str = Field(
      "forward_kl",
      description=(
          "What the soft loss measures between teacher_T and student_T: forward_kl (default), reverse_kl, jsd,"
          " skew_kl, skew_reverse_kl or tvd (see divergences.py)."
      ),
  )
  distill_divergence_beta: float | None = Field(
      None, description="jsd: the teacher's weight beta in the mixture, in [0, 1] (0 forward KL, 1 reverse KL); 0.5."
  )
  distill_skew_lambda: float | None = Field(
      None, description="skew_kl / skew_reverse_kl: the mixing weight lambda in [0, 1); default 0.1 (DistiLLM)."
  )
  distill_feature_loss_type: Literal["cosine", "l2"] = Field("cosine", description="cosine distance or L2 (MSE).")
  distill_feature_projection: Literal["none", "linear"] = Field(
      "none",
      description=(
          "none compares the student's out_projection activations with the teacher's as they are (equal emb_dim);"
          " linear first maps them by a learned [D_student, D_teacher] matrix per aligned layer, trained with the"
          " student's optimizer and saved beside (not inside) its checkpoint. Initialised to the identity when the"
          " widths are equal, else to a random semi-orthogonal matrix (feature_projection.py)."
      ),
  )
  distill_layer_indices: list[int] | None = Field(
      None, description="Scanned layers whose out_projection activations are aligned; None means every layer."
  )
  distill_teacher_layer_indices: list[int] | None = Field(
      None,
      description=(
          "The teacher's scanned layers paired one to one with distill_layer_indices (e.g. a pruned student's"
          " layer 1 with the teacher's layer 3); None uses distill_layer_indices for the teacher too."
      ),
  )
  distill_loss_impl: Literal["auto", "dense", "chunked"] = Field(
      "auto",
      description=(
          "dense: full [B, S, V] logits; chunked: tiles from hidden states (chunked_objective); auto: chunked"
          " on the CPU, when a model has num_vocab_tiling > 1, or when the student's logits would be large; else dense."
      ),
  )
  distill_seq_chunk: int = Field(128, gt=0, description="Chunked loss: sequence positions per tile (all rows).")
  distill_vocab_chunk: int | None = Field(
      None, gt=0, description="Chunked loss: vocabulary columns per tile; None takes the whole vocabulary."
  )

  distill_teacher_weight_dtype: Literal["compute", "float32", "bfloat16"] = Field(
      "compute",
      description=(
          "How the frozen online teacher stores its parameters: compute takes its dtype (it never trains, so"
          " MaxText's training weight_dtype buys it nothing); float32 or bfloat16 names one. A weight_dtype in"
          " teacher_overrides wins."
      ),
  )

  distill_teacher_mixture: Literal["distribution", "loss", "route"] = Field(
      "distribution",
      description=(
          "Several teachers (teachers:): distribution mixes their distributions per token (log sum_i w_i p_i);"
          " loss weighs their losses (sum_i w_i L_i); route scores each example by the teacher its data names."
      ),
  )
  distill_teacher_weights: dict[str, float] | None = Field(
      None, description="Several teachers: {name: weight}, non-negative, summing to 1; None weighs them equally."
  )
  distill_teacher_route_column: str = Field(
      "teacher_id", description="distill_teacher_mixture=route: the training data's column naming each row's teacher."
  )

  distill_top_k: int = Field(128, gt=0, description="Offline: teacher logits kept per token by the caching tool.")
  distill_offline_tail: Literal["auto", "bucket", "renormalize"] = Field(
      "auto",
      description=(
          "Offline: the teacher mass outside its top-k as one extra bucket, or renormalise both models over the"
          " top-k ids (upstream's choice; the only one for caches without a stored tail). auto: bucket when stored."
      ),
  )

  distill_on_policy_fraction: float = Field(
      0.0,
      description=(
          "On-policy share lambda in [0, 1]: the chance that an optimizer step trains on the student's own samples"
          " (from the data's prompts) instead of the dataset's sequences; 0 is off-policy KD. distill_divergence"
          " is kept as set (reverse_kl or jsd are the usual on-policy choices)."
      ),
  )
  distill_on_policy_fraction_end: float | None = Field(None, description="lambda at the last step; None keeps it.")
  distill_on_policy_fraction_schedule: ScheduleKind = Field("constant", description="constant | linear | cosine.")
  distill_teacher_generated: bool = Field(
      False, description="Sequence-level KD: on a sampled step the teacher, not the student, writes the completions."
  )
  distill_sample_max_new_tokens: int = Field(
      16, gt=0, description="Tokens sampled per completion; prompts get max_target_length minus this many positions."
  )
  distill_sample_temperature: float = Field(1.0, ge=0.0, description="Sampling temperature; 0 is greedy.")
  distill_sample_top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass in (0, 1]; 1 is off.")
  distill_sample_top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens; 0 is off.")

  @pydantic.field_validator(
      "distill_alpha_schedule",
      "distill_temperature_schedule",
      "distill_beta_schedule",
      "distill_on_policy_fraction_schedule",
      mode="before",
  )
  @classmethod
  def _known_schedule(cls, value, info):
    if value not in SCHEDULE_KINDS:
      raise ValueError(f"{info.field_name}={value!r} is not a schedule. Fix: use one of {', '.join(SCHEDULE_KINDS)}.")
    return value

  @pydantic.field_validator("distill_feature_loss_type", mode="before")
  @classmethod
  def _known_loss(cls, value):
    if value not in ("cosine", "l2"):
      raise ValueError(f"distill_feature_loss_type={value!r} is unknown. Fix: use 'cosine' (default) or 'l2'.")
    return value

  @pydantic.field_validator("distill_feature_projection", mode="before")
  @classmethod
  def _known_projection(cls, value):
    if value is None:  # MaxText's config loader reads a bare "none" as None
      return "none"
    if value not in ("none", "linear"):
      raise ValueError(
          f"distill_feature_projection={value!r} is unknown. Fix: use 'none' (default: equal widths) or 'linear' (a"
          " learned map from the student's width to the teacher's)."
      )
    return value

  @pydantic.model_validator(mode="after")
  def _projection_has_a_feature_loss(self):
    if self.distill_feature_projection != "none" and not self.extract_features:
      raise ValueError(
          f"distill_feature_projection={self.distill_feature_projection!r} has no effect with distill_beta=0.0 (and"
          " no positive distill_beta_end): there is no feature loss to project. Fix: set distill_beta > 0, or"
          " remove distill_feature_projection."
      )
    return self

  @pydantic.field_validator("distill_divergence", mode="before")
  @classmethod
  def _known_divergence(cls, value):
    if value not in divergences.DIVERGENCES:
      raise ValueError(
          f"distill_divergence={value!r} is not a registered divergence. Fix: use one of"
          f" {', '.join(divergences.DIVERGENCES)}."
      )
    return value

  @pydantic.model_validator(mode="after")
  def _divergence_parameter(self):
    entry = divergences.lookup(self.distill_divergence)
    for key, param in (("distill_divergence_beta", "beta"), ("distill_skew_lambda", "lambda")):
      value = getattr(self, key)
      if value is None:
        continue
      if entry.param != param:
        takes = f"takes {entry.param!r}" if entry.param else "takes no parameter"
        raise ValueError(
            f"{key}={value} has no effect with distill_divergence={self.distill_divergence!r}, which {takes}. Fix:"
            f" remove {key}, or choose a divergence that uses it ({'jsd' if param == 'beta' else 'skew_kl'})."
        )
      try:
        entry.check_param(value)
      except ValueError as error:
        raise ValueError(f"{key}={value}: {error}. Fix: choose a value in that range.") from None
    return self

  @property
  def divergence_param(self) -> float | None:
    """The chosen divergence's parameter (its default when the key is unset), or None."""
    entry = divergences.lookup(self.distill_divergence)
    value = {"beta": self.distill_divergence_beta, "lambda": self.distill_skew_lambda}.get(entry.param)
    return entry.check_param(value) if entry.param else None

  @pydantic.field_validator("distill_alpha", "distill_alpha_end")
  @classmethod
  def _alpha_range(cls, value, info):
    if value is not None and not 0.0 <= value <= 1.0:
      raise ValueError(f"{info.field_name}={value} is outside [0, 1]. Fix: set it between 0 (pure CE) and 1 (pure KL).")
    return value

  @pydantic.field_validator("distill_on_policy_fraction", "distill_on_policy_fraction_end")
  @classmethod
  def _fraction_range(cls, value, info):
    if value is not None and not 0.0 <= value <= 1.0:
      raise ValueError(
          f"{info.field_name}={value} is outside [0, 1]. Fix: set it between 0 (dataset sequences only) and 1 (the"
          " student's samples at every step)."
      )
    return value

  @pydantic.field_validator("distill_temperature", "distill_temperature_end")
  @classmethod
  def _temperature_positive(cls, value, info):
    if value is not None and not value > 0.0:
      raise ValueError(f"{info.field_name}={value} must be > 0. Fix: use a positive temperature such as 1.0 or 2.0.")
    return value

  @pydantic.field_validator("distill_beta", "distill_beta_end")
  @classmethod
  def _beta_non_negative(cls, value, info):
    if value is not None and value < 0.0:
      raise ValueError(f"{info.field_name}={value} must be >= 0. Fix: use 0.0 to disable the feature loss.")
    return value

  @pydantic.field_validator("distill_layer_indices", "distill_teacher_layer_indices", mode="before")
  @classmethod
  def _indices_are_unique_ints(cls, value, info):
    key = info.field_name
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
      return None
    if not isinstance(value, (list, tuple)):
      raise ValueError(f"{key}={value!r} is not a list. Fix: write e.g. {key}=[0,2,4].")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in value):
      raise ValueError(f"{key}={list(value)!r} must hold integers only. Fix: e.g. [0, 2, 4].")
    if any(i < 0 for i in value):
      raise ValueError(f"{key}={list(value)!r} has negative entries. Fix: use layer numbers from 0.")
    if len(set(value)) != len(value):
      raise ValueError(f"{key}={list(value)!r} has duplicates. Fix: list each layer once.")
    return list(value)

  @pydantic.model_validator(mode="after")
  def _schedules_have_ends(self):
    for name in ("distill_alpha", "distill_temperature", "distill_beta", "distill_on_policy_fraction"):
      kind = getattr(self, f"{name}_schedule")
      if kind != "constant" and getattr(self, f"{name}_end") is None:
        raise ValueError(
            f"{name}_schedule={kind!r} but {name}_end is None. Fix: set {name}_end, or {name}_schedule=constant."
        )
    return self

  @pydantic.model_validator(mode="after")
  def _teacher_indices_pair_up(self):
    teacher, student = self.distill_teacher_layer_indices, self.distill_layer_indices
    if teacher is not None and student is not None and len(teacher) != len(student):
      raise ValueError(
          f"distill_teacher_layer_indices={teacher} pairs one to one with distill_layer_indices={student}, but their"
          " lengths differ. Fix: list one teacher layer per student layer."
      )
    return self

  @pydantic.field_validator("distill_teacher_weights")
  @classmethod
  def _weights_are_a_distribution(cls, value):
    if value is None:
      return value
    negative = {name: w for name, w in value.items() if w < 0.0}
    if negative:
      raise ValueError(f"distill_teacher_weights={value} has negative weights {negative}. Fix: use weights >= 0.")
    if abs(sum(value.values()) - 1.0) > 1e-6:
      raise ValueError(
          f"distill_teacher_weights={value} sums to {sum(value.values())}, not 1. Fix: scale the weights to sum to 1."
      )
    return value

  @pydantic.model_validator(mode="after")
  def _teacher_generated_samples(self):
    if self.distill_teacher_generated and not self.on_policy:
      raise ValueError(
          "distill_teacher_generated=True has no effect with distill_on_policy_fraction=0 (and no positive _end): no"
          " step samples. Fix: set distill_on_policy_fraction (e.g. 1.0 for sequence-level KD at every step), or"
          " remove distill_teacher_generated."
      )
    return self

  @property
  def on_policy(self) -> bool:
    """Whether any step can train on sampled completions (lambda or its end value is positive)."""
    return self.distill_on_policy_fraction > 0.0 or (self.distill_on_policy_fraction_end or 0.0) > 0.0

  @property
  def teacher_layer_indices(self) -> list[int] | None:
    """The teacher's layers for the feature loss: its own list, else the student's."""
    if self.distill_teacher_layer_indices is not None:
      return self.distill_teacher_layer_indices
    return self.distill_layer_indices

  @property
  def extract_features(self) -> bool:
    """Whether beta can be positive at any step; then both models sow their activations.

    Unlike upstream, beta ramping up from 0 works: extraction is on whenever
    the start or the end value is positive.
    """
    return self.distill_beta > 0.0 or (self.distill_beta_end or 0.0) > 0.0


DISTILL_KEYS = frozenset(DistillSettings.model_fields)
