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

"""The study's arms: each a YAML plus CLI overrides, trained from the same pruned student on the same data.

``MAIN_ARMS`` run for every seed unless ``--arms`` names others; ``ABLATIONS`` (of recipe (c), in the spec's
priority order) run on the first seed while the budget lasts; ``DIVERGENCE_ARMS`` are recipe (b) with the optimised
divergence changed (``distill_divergence`` and its parameter), for ``--arms kd_forward_kl,kd_reverse_kl,...``.
"""

import dataclasses

from tools.study import common

RECIPE_YAML = "study-pruning-recovery.yml"
LOGIT_KD_YAML = "study-logit-kd.yml"
STUDY_YAMLS = ("demo-model.yml", "demo-pruning-recovery.yml", RECIPE_YAML, "study-sft.yml", LOGIT_KD_YAML)


@dataclasses.dataclass(frozen=True)
class Arm:
  """One training recipe: a YAML plus CLI overrides."""

  name: str
  label: str
  yaml: str
  overrides: tuple[str, ...] = ()
  offline: bool = False  # trains from the cached teacher top-k of its seed
  sft: bool = False  # trains on the function chats (tools.study.on_policy_study), not on the demo's records
  samples: bool = False  # some steps train on sampled completions (distill_on_policy_fraction > 0)


SFT = Arm("sft", "(a) SFT only: alpha 0, beta 0", "study-sft.yml")
LOGIT_KD = Arm("logit_kd", "(b) logit KD: alpha .9->.5, T 2->1", LOGIT_KD_YAML)
RECIPE = Arm("recipe", "(c) b + features: beta 1->.1, layers [0,1]<->[0,3]", RECIPE_YAML)
# The cache already holds the seed's shuffled batches in training order; replaying them unshuffled gives arm (d)
# exactly arm (b)'s data order, so (d) - (b) measures the top-k truncation alone.
OFFLINE = Arm(
    "offline_topk", "(d) b offline: cached teacher top-128", LOGIT_KD_YAML, ("enable_data_shuffling=False",), True
)
MAIN_ARMS = (SFT, LOGIT_KD, RECIPE, OFFLINE)
# Recipe (c) with one key changed, in the spec's ablation order; the budget decides how far down the list to go.
ABLATIONS = (
    Arm("alpha_end_0.3", "c, alpha_end 0.3", RECIPE_YAML, ("distill_alpha_end=0.3",)),
    Arm("alpha_end_0.7", "c, alpha_end 0.7", RECIPE_YAML, ("distill_alpha_end=0.7",)),
    Arm(
        "same_layer_numbers",
        "c, layers [0,1]<->[0,1] (same numbers)",
        RECIPE_YAML,
        ("distill_teacher_layer_indices=None",),
    ),
    Arm(
        "layers_0", "c, layers [0]<->[0]", RECIPE_YAML, ("distill_layer_indices=[0]", "distill_teacher_layer_indices=[0]")
    ),
    Arm(
        "layers_1", "c, layers [1]<->[3]", RECIPE_YAML, ("distill_layer_indices=[1]", "distill_teacher_layer_indices=[3]")
    ),
    Arm("beta_end_0.01", "c, beta_end 0.01", RECIPE_YAML, ("distill_beta_end=0.01",)),
    Arm("beta_end_0.5", "c, beta_end 0.5", RECIPE_YAML, ("distill_beta_end=0.5",)),
    Arm("temperature_4", "c, T 4->1", RECIPE_YAML, ("distill_temperature=4.0",)),
    Arm(
        "temperature_1",
        "c, T 1 (fixed)",
        RECIPE_YAML,
        ("distill_temperature=1.0", "distill_temperature_schedule=constant"),
    ),
    Arm("alpha_linear", "c, alpha schedule linear", RECIPE_YAML, ("distill_alpha_schedule=linear",)),
)

# Recipe (b) with another divergence at T; forward KL is (b) itself, named, so the arms compare like with like.
DIVERGENCE_ARMS = (
    Arm("kd_forward_kl", "b, forward KL", LOGIT_KD_YAML, ("distill_divergence=forward_kl",)),
    Arm("kd_reverse_kl", "b, reverse KL", LOGIT_KD_YAML, ("distill_divergence=reverse_kl",)),
    Arm("kd_jsd", "b, JSD(beta 0.5)", LOGIT_KD_YAML, ("distill_divergence=jsd", "distill_divergence_beta=0.5")),
    Arm(
        "kd_skew_kl", "b, skew KL (lambda 0.1)", LOGIT_KD_YAML, ("distill_divergence=skew_kl", "distill_skew_lambda=0.1")
    ),
    Arm(
        "kd_skew_reverse_kl",
        "b, skew reverse KL (lambda 0.1)",
        LOGIT_KD_YAML,
        ("distill_divergence=skew_reverse_kl", "distill_skew_lambda=0.1"),
    ),
    Arm("kd_tvd", "b, total variation", LOGIT_KD_YAML, ("distill_divergence=tvd",)),
)
KD_FORWARD_KL = DIVERGENCE_ARMS[0]
# Every arm, in the order the summary lists them.
ALL_ARMS = MAIN_ARMS + DIVERGENCE_ARMS + ABLATIONS

# On function chats (signature + docstring -> body): one divergence (forward KL at T 1, pure distillation, alpha 1)
# in every arm, so that only where the training sequences come from changes.
ON_POLICY_COMMON = (
    "distill_alpha=1.0",
    "distill_alpha_end=None",
    "distill_alpha_schedule=constant",
    "distill_temperature=1.0",
    "distill_temperature_end=None",
    "distill_temperature_schedule=constant",
    "distill_divergence=forward_kl",
)
ON_POLICY_OFF = Arm(
    "onpolicy_off", "off-policy KD (lambda 0)", LOGIT_KD_YAML, ("distill_on_policy_fraction=0.0",), sft=True
)
ON_POLICY_1 = Arm(
    "onpolicy_1", "on-policy KD (lambda 1)", LOGIT_KD_YAML, ("distill_on_policy_fraction=1.0",), sft=True, samples=True
)
ON_POLICY_HALF = Arm(
    "onpolicy_0.5", "mixed (lambda 0.5)", LOGIT_KD_YAML, ("distill_on_policy_fraction=0.5",), sft=True, samples=True
)
SEQ_KD = Arm(
    "seqkd",
    "sequence-level KD (teacher samples)",
    LOGIT_KD_YAML,
    ("distill_on_policy_fraction=1.0", "distill_teacher_generated=True"),
    sft=True,
    samples=True,
)
ON_POLICY_ARMS = (ON_POLICY_OFF, ON_POLICY_1, ON_POLICY_HALF, SEQ_KD)
BY_NAME = {arm.name: arm for arm in ALL_ARMS + ON_POLICY_ARMS}
# Pairs (left, right) whose same-seed CE difference the study reports, where both ran.
PAIRS = (
    ((LOGIT_KD, SFT), (RECIPE, SFT), (OFFLINE, SFT), (RECIPE, LOGIT_KD), (OFFLINE, LOGIT_KD))
    + ((KD_FORWARD_KL, LOGIT_KD),)
    + tuple((arm, KD_FORWARD_KL) for arm in DIVERGENCE_ARMS[1:])
    + tuple((arm, RECIPE) for arm in ABLATIONS)
)


def select(names: str) -> tuple[Arm, ...]:
  """The arms of a comma-separated list of names (``--arms``), in the order given.

  Raises:
    ValueError: a name is not an arm, or a name is repeated; the message lists the arms there are.
  """
  picked = common.select(names, BY_NAME)
  if len({arm.sft for arm in picked}) > 1:
    raise ValueError(
        f"--arms={names!r} mixes arms on function chats ({', '.join(a.name for a in ON_POLICY_ARMS)}) with arms on the"
        " demo's records. Fix: run them in separate invocations."
    )
  return picked
