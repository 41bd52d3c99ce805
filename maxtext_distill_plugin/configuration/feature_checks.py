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

"""The feature loss's checks on both models' configs, before any model is built (``config.cross_check`` calls them).

The loss reads every aligned layer's attention ``out_projection`` along the scan axis, so both models must scan
their layers, sow the activations in every layer (:func:`features.sow_refusal`) and have the layers the
``distill_*layer_indices`` name; the activations are compared element-wise, so the widths must be equal unless
``distill_feature_projection=linear`` maps the student's to the teacher's first.
"""

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.model import features

# The optimizers MaxText builds without the model (muon reads each weight's dimension numbers from it).
PROJECTION_OPTIMIZERS = ("adamw", "adam_pax", "sgd")


def check(settings: DistillSettings, student, teacher) -> None:
  """Refuses a feature loss the two configs cannot give; nothing when the loss is off."""
  if not settings.extract_features:
    return
  for label, cfg in (("student", student), ("teacher", teacher)):
    if not cfg.scan_layers:
      raise errors.ConfigError(
          f"{label}.scan_layers", cfg.scan_layers, "add scan_layers: True (the feature loss indexes the scan axis)."
      )
    _check_sows(label, cfg)
  _check_layer_indices(settings, int(student.num_decoder_layers), int(teacher.num_decoder_layers))
  if settings.distill_feature_projection == "none" and student.emb_dim != teacher.emb_dim:
    raise errors.ConfigError(
        "emb_dim",
        f"student={student.emb_dim} teacher={teacher.emb_dim}",
        "the feature loss compares activations element-wise; set distill_feature_projection=linear (a learned map"
        " from the student's width to the teacher's), use equal widths, or distill_beta=0.0.",
    )
  if settings.distill_feature_projection != "none" and student.opt_type not in PROJECTION_OPTIMIZERS:
    raise errors.ConfigError(
        "opt_type",
        student.opt_type,
        f"distill_feature_projection={settings.distill_feature_projection} trains the projection with the student's"
        f" optimizer, which for opt_type={student.opt_type} depends on the model's own parameter tree; use opt_type"
        f" {' or '.join(PROJECTION_OPTIMIZERS)}, or distill_feature_projection=none.",
    )


def _check_sows(label: str, cfg) -> None:
  """The feature loss needs every layer's attention output: refuse a decoder that cannot sow it, before any build."""
  reason = features.sow_refusal(cfg)
  if reason is not None:
    block = getattr(cfg.decoder_block, "value", cfg.decoder_block)
    raise errors.ConfigError(
        f"{label}.decoder_block",
        block,
        f"{reason}. Use a decoder_block that sows ({', '.join(sorted(features.SOWING_DECODERS))}) for the {label}, or"
        " set distill_beta=0.0 (and distill_beta_end) to distill the logits only.",
    )


def _check_layer_indices(settings: DistillSettings, student_layers: int, teacher_layers: int) -> None:
  """Each model's feature-loss layers exist in it, and the two lists pair up one to one."""
  student_indices, teacher_own = settings.distill_layer_indices, settings.distill_teacher_layer_indices
  depths = f"student has {student_layers} layers, teacher {teacher_layers}"
  if teacher_own is not None:
    if student_indices is None and len(teacher_own) != student_layers:
      raise errors.ConfigError(
          "distill_teacher_layer_indices",
          teacher_own,
          f"with distill_layer_indices=None every student layer is aligned ({depths}); list {student_layers} teacher"
          " layers, or set distill_layer_indices too.",
      )
    checks = (
        ("distill_layer_indices", student_indices, student_layers),
        ("distill_teacher_layer_indices", teacher_own, teacher_layers),
    )
  elif student_indices is not None:
    bound = min(student_layers, teacher_layers)
    checks = (("distill_layer_indices", student_indices, bound),)
  elif student_layers != teacher_layers:
    raise errors.ConfigError(
        "distill_layer_indices",
        None,
        f"the {depths}; list the layers to align, e.g. distill_layer_indices=[0, 1], and the teacher's partners in"
        " distill_teacher_layer_indices when they differ.",
    )
  else:
    checks = ()
  for key, indices, bound in checks:
    if indices is not None and any(i >= bound for i in indices):
      raise errors.ConfigError(key, indices, f"use indices below {bound} ({depths}).")
