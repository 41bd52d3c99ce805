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

"""The arms of the addition study (the six of issue 20 and a two-stage one), each ``configs/study-arith.yml`` plus
the overrides listed here.

Every arm trains the same pruned student with the same optimizer, steps, batch, data order (``data_shuffle_seed``)
and sampling seed (``init_weights_seed``); the sampled arms draw completions of the batch's prompts at temperature 1
with at most ``distill_sample_max_new_tokens`` tokens. Divergences at T = 1.
"""

import dataclasses

from tools.study import common


@dataclasses.dataclass(frozen=True)
class TaskArm:
  """One recipe: CLI overrides of the study YAML, and whether its teacher is the uniform one."""

  name: str
  label: str
  overrides: tuple[str, ...]
  samples: bool = False  # some steps train on sampled completions
  uniform_teacher: bool = False  # the teacher checkpoint's unembedding is zeroed: every position is uniform
  # Two stages in one budget: start from this arm's last checkpoint before its final one (same seed) and run the
  # steps left of the plan's budget (arithmetic_study.first_stage_steps).
  after: str | None = None


SFT = TaskArm("sft", "(1) SFT on the reference answers", ("distill_alpha=0.0",))
# Kim & Rush: the student's CE on the teacher's completions (sampled at T 1) instead of the reference answers.
SEQ_KD = TaskArm(
    "seqkd",
    "(2) sequence-level KD (CE on teacher samples)",
    ("distill_alpha=0.0", "distill_on_policy_fraction=1.0", "distill_teacher_generated=True"),
    samples=True,
)
OFF_POLICY = TaskArm("offpolicy_kd", "(3) off-policy logit KD (forward KL)", ("distill_divergence=forward_kl",))
ON_POLICY_1 = TaskArm(
    "onpolicy_1",
    "(4) on-policy reverse KL (lambda 1)",
    ("distill_divergence=reverse_kl", "distill_on_policy_fraction=1.0"),
    samples=True,
)
ON_POLICY_HALF = TaskArm(
    "onpolicy_0.5",
    "(5) mixed reverse KL (lambda 0.5)",
    ("distill_divergence=reverse_kl", "distill_on_policy_fraction=0.5"),
    samples=True,
)
# No teacher signal: reverse KL to a uniform distribution on the student's own samples, i.e. log V minus the
# student's entropy at every sampled position; its gradient raises entropy and knows nothing of the answers.
CONTROL = TaskArm(
    "control_uniform",
    "(6) no-teacher control: (4) against a uniform teacher",
    ("distill_divergence=reverse_kl", "distill_on_policy_fraction=1.0"),
    samples=True,
    uniform_teacher=True,
)
# The usual recipe (GKD, Qwen3): on-policy distillation of a student already fine-tuned on the task. SFT for two thirds
# of the budget (arm 1's own checkpoint), then (4) for the rest, so optimizer steps and student tokens match the others.
SFT_THEN_ON_POLICY = TaskArm(
    "sft_then_onpolicy",
    "(7) SFT for 2/3 of the steps, then (4)",
    ON_POLICY_1.overrides,
    samples=True,
    after=SFT.name,
)
ARMS = (SFT, SEQ_KD, OFF_POLICY, ON_POLICY_1, ON_POLICY_HALF, CONTROL, SFT_THEN_ON_POLICY)
BY_NAME = {arm.name: arm for arm in ARMS}


def select(names: str) -> tuple[TaskArm, ...]:
  """The arms of a comma-separated list of names, in the order given (:func:`common.select`'s errors)."""
  return common.select(names, BY_NAME)
