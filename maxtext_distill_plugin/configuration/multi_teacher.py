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


"""Several teachers in one run: the ``teachers:`` list, its checks and each teacher's MaxText config.

Each entry is ``{name: <str>, overrides: {<MaxText key>: <value>, ...}}``; the overrides play the role of
``teacher_overrides`` for that teacher (model, checkpoint, dtype and other mesh-compatible settings). Offline, each
entry is ``{name: <str>, offline_data_dir: <cache>}`` instead: one top-k cache per teacher, written from the same
sequences in the same order (:mod:`training.sources.caches` checks that as it reads them). Everything is checked
here, before any model is built: a bad entry, unknown or negative weights, a mixture the run cannot honour.
"""

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration.settings import DistillSettings

_EXAMPLE = "teachers: [{name: math, overrides: {load_parameters_path: <ckpt>}}, {name: code, overrides: {...}}]"


def entries(raw, teacher_overrides: dict) -> tuple[tuple[str, dict], ...]:
  """``((name, overrides), ...)`` of the ``teachers:`` list (empty when unset), checked for shape and names."""
  if not raw:
    return ()
  if teacher_overrides:
    raise errors.ConfigError(
        "teachers",
        f"{len(raw)} entries and teacher_overrides={teacher_overrides}",
        "give either teacher_overrides (one teacher) or teachers: (several), not both; move the teacher's keys into"
        " an entry of teachers:.",
    )
  if not isinstance(raw, (list, tuple)) or len(raw) < 2:
    raise errors.ConfigError(
        "teachers", raw, f"list two or more teachers ({_EXAMPLE}); one teacher is teacher_overrides."
    )
  found = []
  cached = [isinstance(entry, dict) and "offline_data_dir" in entry for entry in raw]
  if any(cached) and not all(cached):
    raise errors.ConfigError(
        "teachers", raw, "give every teacher an offline_data_dir (offline) or none (online): a run is one or the other."
    )
  keys = {"name", "offline_data_dir"} if all(cached) else {"name", "overrides"}
  for index, entry in enumerate(raw):
    if not isinstance(entry, dict) or set(entry) - keys or not isinstance(entry.get("name"), str):
      raise errors.ConfigError(
          f"teachers[{index}]",
          entry,
          f"write each entry as {{name, overrides}} ({_EXAMPLE}) or, offline, as {{name, offline_data_dir}}.",
      )
    if all(cached):
      found.append((entry["name"], {}))
      continue
    overrides = dict(entry.get("overrides") or {})
    if not overrides.get("load_parameters_path"):
      raise errors.ConfigError(
          f"teachers[{index}].overrides.load_parameters_path", None, "give each teacher its trained checkpoint."
      )
    found.append((entry["name"], overrides))
  names = [name for name, _ in found]
  if len(set(names)) != len(names) or not all(names):
    raise errors.ConfigError("teachers", names, "give every teacher a distinct, non-empty name.")
  return tuple(found)


def caches(raw) -> tuple[tuple[str, str], ...]:
  """``((name, offline_data_dir), ...)`` of an offline ``teachers:`` list (checked by :func:`entries`); else empty."""
  if not raw or not all(isinstance(entry, dict) and "offline_data_dir" in entry for entry in raw):
    return ()
  for index, entry in enumerate(raw):
    if not isinstance(entry["offline_data_dir"], str) or not entry["offline_data_dir"]:
      raise errors.ConfigError(
          f"teachers[{index}].offline_data_dir", entry["offline_data_dir"], "give each teacher's cache directory."
      )
  return tuple((entry["name"], entry["offline_data_dir"]) for entry in raw)


def check_caches_agree(caches_by_name: tuple[tuple[str, str], ...]) -> None:
  """Refuses teacher caches that do not hold the same sequences in the same order (a sample of records: cheap)."""
  from maxtext_distill_plugin.teacher_cache import any_format  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.training.sources import caches  # pylint: disable=import-outside-toplevel

  names = tuple(name for name, _ in caches_by_name)
  try:
    caches.check_same_sequences(names, tuple(any_format.open_any(path) for _, path in caches_by_name))
  except caches.CachesMismatch as e:
    raise errors.ConfigError("teachers", [path for _, path in caches_by_name], str(e).replace(" Fix: ", "; ")) from None


def check_settings(names: tuple[str, ...], settings: DistillSettings, *, offline: bool) -> None:
  """The distill_* keys against the list of teachers: weights name known teachers; refused combinations."""
  weights = settings.distill_teacher_weights
  column = settings.distill_teacher_route_column
  if column != DistillSettings().distill_teacher_route_column and (
      not names or settings.distill_teacher_mixture != "route"
  ):
    raise errors.ConfigError(
        "distill_teacher_route_column",
        column,
        "only routing reads it (teachers: with distill_teacher_mixture=route); set the mixture to route or remove it.",
    )
  if not names:
    for key, value, default in (
        ("distill_teacher_weights", weights, None),
        ("distill_teacher_mixture", settings.distill_teacher_mixture, "distribution"),
    ):
      if value != default:
        raise errors.ConfigError(key, value, "it applies to several teachers (teachers:); remove it for one teacher.")
    return
  if offline and settings.distill_teacher_mixture != "loss":
    raise errors.ConfigError(
        "distill_teacher_mixture",
        settings.distill_teacher_mixture,
        "offline, each cache holds its own teacher's top-k ids per token, so the teachers' distributions have no"
        " common support to mix (distribution) and the caches carry no route column (route): use"
        " distill_teacher_mixture=loss, or several online teachers.",
    )
  if settings.on_policy and settings.distill_teacher_generated:
    raise errors.ConfigError(
        "distill_teacher_generated",
        True,
        "with several teachers the student samples (there is no one teacher to sample from): set"
        " distill_teacher_generated=false, or use one teacher.",
    )
  if settings.extract_features:
    raise errors.ConfigError(
        "teachers", list(names), "the feature loss aligns one teacher's layers; set distill_beta=0.0 with several."
    )
  if weights is not None:
    unknown = sorted(set(weights) - set(names))
    if unknown:
      raise errors.ConfigError(
          "distill_teacher_weights", weights, f"{unknown} name no teacher; use the names in teachers: {list(names)}."
      )
    if set(weights) != set(names):
      raise errors.ConfigError(
          "distill_teacher_weights", weights, f"give a weight to every teacher {list(names)} (0 to leave one out)."
      )
    if settings.distill_teacher_mixture == "route":
      raise errors.ConfigError(
          "distill_teacher_weights", weights, "routing scores each example by its own teacher; remove the weights."
      )


def weights(names: tuple[str, ...], settings: DistillSettings) -> tuple[float, ...]:
  """Each teacher's weight in ``names`` order (equal when unset)."""
  if settings.distill_teacher_weights is None:
    return tuple(1.0 / len(names) for _ in names)
  return tuple(float(settings.distill_teacher_weights[name]) for name in names)
