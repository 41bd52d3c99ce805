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

"""Builds the global, student and teacher MaxText configs of a distillation run.

Precedence:
  student: YAML < CLI < ``student_overrides``
  teacher: YAML < shared CLI keys < ``teacher_overrides``

CLI keys reach the student only, as the spec says, except
``teacher_configs.TEACHER_SHARED_KEYS``: the batch shape (the teacher reads the
student's batches) and the process environment (``hardware`` and friends),
without which the teacher could not run in the same process at all. Whether
features are extracted is decided once, from the global ``distill_*`` section,
for both models. The teachers' configs are built in :mod:`teacher_configs`, the
checkpoint paths checked in :mod:`checkpoint_paths`, the feature loss's
cross-model checks made in :mod:`feature_checks`.

The ``distill_*`` keys live in a typed section (:class:`DistillSettings`) that
is attached to MaxText's own config class at run time; keys the host lacks
(``enable_nnx`` on 0.2.5, every distillation key on a fork) are added there.
The host's flat ``distill_beta`` only gates MaxText's ``sow`` of
``out_projection``; the trainer reads the section.
"""

import dataclasses
import difflib
import functools
import os
from typing import Any

from absl import logging
import pydantic

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration import cache_checks
from maxtext_distill_plugin.configuration import checkpoint_checks
from maxtext_distill_plugin.configuration import checkpoint_paths
from maxtext_distill_plugin.configuration import data_sources
from maxtext_distill_plugin.configuration import feature_checks
from maxtext_distill_plugin.configuration import multi_teacher
from maxtext_distill_plugin.configuration import on_policy_checks
from maxtext_distill_plugin.configuration import route_checks
from maxtext_distill_plugin.configuration import teacher_configs
from maxtext_distill_plugin.configuration.settings import DISTILL_KEYS, DistillSettings
from maxtext_distill_plugin.configuration.teacher_configs import BATCH_SHAPE_KEYS
from maxtext_distill_plugin.student import student_init

# Keys that describe the whole run; inside student_overrides/teacher_overrides they would silently split it.
_RUN_LEVEL_KEYS = DISTILL_KEYS | {"student_overrides", "teacher_overrides", "offline_data_dir", "teachers"}


@dataclasses.dataclass(frozen=True)
class DistillConfigs:
  """The three configs of a run plus the typed distillation section."""

  global_config: Any
  student: Any
  teacher: Any | None
  settings: DistillSettings
  # Offline the student's own pipeline is idle; this is the student with the YAML's data, for held-out evals only.
  offline_eval: Any | None = None
  # Upstream's student-side keys resolved (student_init): teacher weights to copy, trainable counts.
  student_init: Any | None = None
  argv: tuple[str, ...] = ()  # the command line the configs were built from (written into the run directory)
  # Several teachers (multi_teacher): ((name, config), ...) in teachers: order; ``teacher`` is then the first one's.
  teachers: tuple[tuple[str, Any], ...] = ()
  # distill_teacher_mixture=route: one route_checks.RouteStream per teacher, in teachers: order.
  routes: tuple[Any, ...] = ()
  # Several offline teachers (multi_teacher.caches): ((name, offline_data_dir), ...) in teachers: order.
  caches: tuple[tuple[str, str], ...] = ()

  @property
  def offline(self) -> bool:
    return bool(self.global_config.offline_data_dir) or bool(self.caches)


@functools.cache
def config_class():
  """MaxText's config class extended with the plugin's section and missing keys."""
  from maxtext.configs import types  # pylint: disable=import-outside-toplevel

  host = types.MaxTextConfig
  host_fields = host.model_fields
  extra_fields: dict[str, Any] = {"distill": (DistillSettings, pydantic.Field(default_factory=DistillSettings))}
  if "enable_nnx" not in host_fields:
    extra_fields["enable_nnx"] = (bool, pydantic.Field(True, description="Spec key; NNX is the only path here."))
  if "student_overrides" not in host_fields:
    extra_fields["student_overrides"] = (dict[str, Any], pydantic.Field(default_factory=dict))
    extra_fields["teacher_overrides"] = (dict[str, Any], pydantic.Field(default_factory=dict))
  if "offline_data_dir" not in host_fields:
    extra_fields["offline_data_dir"] = (str | None, pydantic.Field(None))
  if "teachers" not in host_fields:
    extra_fields["teachers"] = (list[dict[str, Any]], pydantic.Field(default_factory=list))

  def route_distill_keys(cls, data):
    del cls
    if not isinstance(data, dict):
      return data
    data = dict(data)
    section = {k: data.pop(k) for k in list(data) if k in DISTILL_KEYS}
    settings = settings_from(**{**dict(data.pop("distill", None) or {}), **section})
    if settings.extract_features:
      if not data.get("scan_layers", True):
        raise ValueError(
            f"distill_beta={settings.distill_beta} (end {settings.distill_beta_end}) needs scan_layers=True, got"
            f" scan_layers={data.get('scan_layers')}. Fix: add scan_layers: True, or set distill_beta=0.0."
        )
      if data.get("enable_nnx", True) is False:
        raise ValueError(
            "enable_nnx=False with a feature loss: the out_projection activations are sown with nnx.sow."
            " Fix: set enable_nnx: True, or distill_beta=0.0."
        )
    data["distill"] = settings
    mirrored = settings.model_dump()
    # The host gates its sow on distill_beta > 0, and refuses beta=0 with beta_end>0; give it the gate only.
    mirrored["distill_beta"] = max(settings.distill_beta, settings.distill_beta_end or 0.0)
    mirrored["distill_beta_end"] = None
    mirrored["distill_beta_schedule"] = "constant"
    for key, value in mirrored.items():
      if key in host_fields:
        data[key] = value
    return data

  validators = {"route_distill_keys": pydantic.model_validator(mode="before")(classmethod(route_distill_keys))}
  return pydantic.create_model(
      "DistillMaxTextConfig", __base__=host, __validators__=validators, **extra_fields  # type: ignore[call-overload]
  )


def settings_from(**values) -> DistillSettings:
  """Validates the distill_* section; type errors get the same key/value/fix message as range errors."""
  try:
    return DistillSettings(**values)
  except pydantic.ValidationError as e:
    problems = []
    for error in e.errors():
      key = ".".join(str(part) for part in error["loc"]) or "distill section"
      message = error["msg"].removeprefix("Value error, ")
      if "Fix:" not in message:
        field = DistillSettings.model_fields.get(str(error["loc"][0])) if error["loc"] else None
        hint = f" ({field.description})" if field is not None and field.description else ""
        message = f"{key}={error.get('input')!r}: {message}. Fix: give {key} a valid value{hint}."
      problems.append(message)
    raise ValueError("; ".join(problems)) from None


def known_keys() -> frozenset[str]:
  return frozenset(config_class().model_fields) | DISTILL_KEYS


def _shipped_config_dirs() -> list[str]:
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # maxtext_distill_plugin/
  # Installed: configs/ ships inside the package; source checkout: configs/ beside it.
  candidates = (os.path.join(package, "configs"), os.path.join(os.path.dirname(package), "configs"))
  return [d for d in candidates if os.path.isdir(d)]


def shipped_configs() -> list[str]:
  return sorted({f for d in _shipped_config_dirs() for f in os.listdir(d) if f.endswith(".yml")})


def resolve_yaml(name: str) -> str:
  """Finds a YAML by path, among the plugin's shipped configs, or MaxText's."""
  if os.path.isfile(name):
    return os.path.abspath(name)
  candidates = [os.path.join(d, name) for d in _shipped_config_dirs()]
  try:
    from maxtext.utils.globals import MAXTEXT_CONFIGS_DIR  # pylint: disable=import-outside-toplevel

    candidates += [os.path.join(MAXTEXT_CONFIGS_DIR, name), os.path.join(MAXTEXT_CONFIGS_DIR, "post_train", name)]
  except ImportError:
    pass
  for path in candidates:
    if os.path.isfile(path):
      return path
  raise errors.ConfigError(
      "config file", name, "pass a YAML path, or the name of a shipped config (see configs/ or `maxtext-distill --list`)."
  )


def parse_cli(argv: list[str]) -> tuple[str, dict[str, str]]:
  """Splits ``[prog, config.yml, key=value, ...]``; refuses malformed pairs and unknown keys."""
  if len(argv) < 2 or "=" in argv[1]:
    raise errors.ConfigError(
        "config file", argv[1] if len(argv) > 1 else None, "put the YAML first: train_distill <config.yml> key=value ..."
    )
  overrides: dict[str, str] = {}
  for arg in argv[2:]:
    key, sep, value = arg.partition("=")
    if not sep or not key or key.startswith("-"):
      raise errors.ConfigError(arg, arg, "pass overrides as key=value, e.g. steps=100.")
    top = key.split(".")[0]
    if top not in known_keys():
      close = difflib.get_close_matches(top, known_keys(), n=3)
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      raise errors.ConfigError(top, value, f"remove it or fix its spelling; it is not a MaxText or distill key.{hint}")
    if key == "steps" and value.lstrip("-").isdigit() and int(value) <= 0:
      raise errors.ConfigError("steps", value, "set steps to the number of optimizer steps to run, e.g. steps=1000.")
    overrides[key] = value
  return resolve_yaml(argv[1]), overrides


def _check_override_keys(name: str, overrides: dict) -> None:
  for key in overrides:
    if key not in known_keys():
      close = difflib.get_close_matches(key, known_keys(), n=3)
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      raise errors.ConfigError(f"{name}.{key}", overrides[key], f"remove it or fix its spelling.{hint}")
    if key in _RUN_LEVEL_KEYS:
      raise errors.ConfigError(
          f"{name}.{key}", overrides[key], "set distillation keys at the top level; they apply to the run, not one model."
      )


def _initialize(argv: list[str], **kwargs):
  from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel

  return pyconfig.initialize(argv, config_class=config_class(), **kwargs)


def cross_check(configs: DistillConfigs) -> None:
  """Checks that need both models' configs; runs before any model is built."""
  student, teacher, settings = configs.student, configs.teacher, configs.settings
  if student.steps <= 0:
    raise errors.ConfigError(
        "steps", student.steps, "set steps to the number of optimizer steps to run, e.g. steps=1000."
    )
  if getattr(student, "use_indexer", False):
    raise errors.ConfigError(
        "use_indexer",
        True,
        "the plugin does not add MaxText's indexer loss to the student's objective; set use_indexer=False.",
    )
  if getattr(student, "routed_bias", False) and getattr(student, "routed_bias_update_rate", 0.0) > 0.0:
    raise errors.ConfigError(
        "routed_bias_update_rate",
        student.routed_bias_update_rate,
        "the plugin does not apply MaxText's router-bias updates to the student; set routed_bias_update_rate=0.0.",
    )
  on_policy_checks.check(student, settings, offline=configs.offline)
  if teacher is None:
    return
  for key in BATCH_SHAPE_KEYS:
    if getattr(student, key) != getattr(teacher, key):
      raise errors.ConfigError(
          key,
          f"student={getattr(student, key)} teacher={getattr(teacher, key)}",
          f"set {key} at the top level of the YAML, not in student_overrides/teacher_overrides; the teacher reads the"
          " student's batches.",
      )
  if student.vocab_size != teacher.vocab_size:
    raise errors.ConfigError(
        "vocab_size",
        f"student={student.vocab_size} teacher={teacher.vocab_size}",
        "use a teacher and student with the same vocabulary/tokenizer; logits cannot be matched across vocabularies.",
    )
  feature_checks.check(settings, student, teacher)


def build(argv: list[str], *, plan: bool = False) -> DistillConfigs:
  """Builds and checks the three configs from ``[prog, config.yml, key=value, ...]``.

  ``plan``: the planner builds the configs to compile for a topology and reads nothing from disk, so checkpoint
  paths that do not exist yet are accepted with a warning.
  """
  yaml_path, cli = parse_cli(argv)
  cli_args = [f"{k}=''" if v == "" and _is_string_key(k) else f"{k}={v}" for k, v in cli.items()]
  base = [argv[0] or "train_distill", yaml_path]
  global_config = _initialize(base + cli_args, log_config=False)
  settings = (
      DistillSettings(**global_config.distill) if isinstance(global_config.distill, dict) else global_config.distill
  )
  student_overrides = _empty_strings_kept(global_config.student_overrides)
  teacher_overrides = _empty_strings_kept(global_config.teacher_overrides)
  _check_override_keys("student_overrides", student_overrides)
  _check_override_keys("teacher_overrides", teacher_overrides)
  teacher_caches = multi_teacher.caches(getattr(global_config, "teachers", None))
  if teacher_caches and global_config.offline_data_dir:
    raise errors.ConfigError(
        "offline_data_dir", global_config.offline_data_dir, "with teachers: give each entry its own offline_data_dir."
    )
  offline = bool(global_config.offline_data_dir) or bool(teacher_caches)
  teacher_entries, teacher_overrides = teacher_configs.entries(
      global_config, settings, teacher_overrides, _check_override_keys, offline=offline
  )
  student_init.check_teacher_overrides(teacher_overrides)
  cache_dirs = [d for _, d in teacher_caches] or ([global_config.offline_data_dir] if offline else [])
  for path in cache_dirs:
    if plan and not os.path.isdir(path):
      logging.warning("offline_data_dir=%s does not exist; the planner compiles for distill_top_k ids.", path)
    elif not os.path.isdir(path) or not os.listdir(path):
      raise errors.ConfigError(
          "offline_data_dir", path, "point it at a teacher cache written by save_top_k_teacher_logits, or unset it."
      )
  if offline:
    if settings.distill_teacher_weight_dtype != "compute":
      raise errors.ConfigError(
          "distill_teacher_weight_dtype",
          settings.distill_teacher_weight_dtype,
          "offline there is no teacher model to store (the cache holds its top-k): drop the key here, and give it to"
          " save_top_k_teacher_logits when writing the cache instead.",
      )
  else:
    checkpoint_paths.require_online_teacher(teacher_overrides)
  # Offline, the cache supplies the batches: MaxText's own pipeline is kept idle.
  offline_data = {"dataset_type": "synthetic"} if offline else {}
  student = _initialize(base + cli_args, **{**student_overrides, **offline_data})
  teacher, teachers = None, ()
  if not offline:
    teacher, teachers = teacher_configs.build(
        _initialize, base, global_config, cli, settings, teacher_overrides, teacher_entries, plan=plan
    )
  if student.load_parameters_path:
    checkpoint_paths.check_path("load_parameters_path", student.load_parameters_path, plan)
  offline_eval = None
  if offline and student.eval_interval > 0:
    offline_eval = _initialize(base + cli_args, log_config=False, **student_overrides)
  student, init = student_init.resolve(
      student,
      teacher,
      lambda extra: _initialize(base + cli_args, log_config=False, **{**student_overrides, **offline_data, **extra}),
  )
  configs = teacher_configs.attach(
      DistillConfigs(global_config, student, teacher, settings, offline_eval, init, tuple(argv)), teachers
  )
  configs = dataclasses.replace(configs, caches=teacher_caches)
  for _, member in configs.teachers[1:]:
    cross_check(dataclasses.replace(configs, teacher=member))
  cross_check(configs)
  if plan:  # the planner compiles on abstract batches: no data or cache is read
    return configs
  data_sources.check_student_data(offline_eval if offline_eval is not None else student)
  if configs.teachers and settings.distill_teacher_mixture == "route":
    routes = route_checks.plan_streams(
        student,
        tuple(name for name, _ in configs.teachers),
        settings.distill_teacher_route_column,
        lambda extra: _initialize(base + cli_args, log_config=False, **{**student_overrides, **extra}),
    )
    configs = dataclasses.replace(configs, routes=routes)
  for path in cache_dirs:
    cache_checks.check_cache_matches(path, student, settings)
  if teacher_caches:
    multi_teacher.check_caches_agree(teacher_caches)
  checkpoint_checks.check_run(configs, student_overrides)
  return configs


def _is_string_key(key: str) -> bool:
  field = config_class().model_fields.get(key)
  return field is not None and field.annotation is str


def _empty_strings_kept(overrides) -> dict:
  """A bare ``key=`` (``load_parameters_path=``: upstream's fresh student) reads as None, which MaxText's string keys
  refuse; a string key takes it as the empty string it was written as."""
  return {key: "" if value is None and _is_string_key(key) else value for key, value in dict(overrides or {}).items()}
