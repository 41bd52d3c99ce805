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

"""Every ``distill/*`` and ``eval/*`` metric name the loss and the step emit, defined once.

All of them travel as token-weighted ``(sum, count)`` pairs (:mod:`reductions`) unless noted.
Divergences are per token, at the distillation temperature T without the T^2 factor, unless
the name says T = 1.
"""

PREFIX = "distill/"
EVAL_PREFIX = "eval/"

# The objective (objective.combine_terms).
TOTAL_LOSS = "distill/total_loss"
SOFT_LOSS = "distill/soft_loss"  # T^2 * DIVERGENCE_AT_T
HARD_LOSS = "distill/hard_loss"  # the student's CE on the labels
DIVERGENCE_AT_T = "distill/divergence_at_T"  # the optimised divergence (distill_divergence)
KL_DIV_AT_T = "distill/kl_div_at_T"  # forward KL at T, whatever is optimised
KL_DIV_T1 = "distill/kl_div_T1"  # forward KL at T = 1: the spec's cross-run metric
FEATURE_LOSS = "distill/out_proj_feature_loss"  # beta * mean over the selected layers
_FEATURE_LAYER = FEATURE_LOSS + "/layer_{}"  # one selected layer's distance, before beta
Z_LOSS = "distill/z_loss"

# Teacher-side metrics of one path each.
TEACHER_LOSS = "distill/teacher_loss"  # online: the teacher's CE on the labels
TOPK_COVERAGE = "distill/topk_coverage"  # teacher mass in its top-k (offline: the cache's; online: a k-cache's)

# Diagnostics (gradient-stopped, every path).
TOP1_AGREEMENT = "distill/top1_agreement"  # 1 where the argmax of teacher and student agree
TEACHER_ENTROPY = "distill/teacher_entropy"  # nats at T = 1 (offline: of the k+1 buckets)
STUDENT_ENTROPY = "distill/student_entropy"  # nats at T = 1
# Online, these cost full-vocabulary passes (a top-k among them), so a training step computes them only on the steps
# that end a logging window (step.StepOptions.diagnostics_every); the other steps carry them as (0, 0) pairs.
ONLINE_DIAGNOSTICS = (TOP1_AGREEMENT, TEACHER_ENTROPY, STUDENT_ENTROPY, TOPK_COVERAGE)

# The student's own MaxText terms (aux_terms).
MOE_LB = "distill/moe_lb_loss"
TEACHER_MOE_LB = "distill/teacher_moe_lb_loss"
MTP = "distill/mtp_loss"
# Logged as 0 by a training step that has no such term (a model without experts), as MaxText's own trainer logs them.
ZERO_WHEN_ABSENT = (MOE_LB, TEACHER_MOE_LB)

# Per-step scalars, (value, 1) pairs (objective.schedule_metrics), and host-side derived values.
ALPHA = "distill/alpha"
TEMPERATURE = "distill/temperature"
BETA_FEATURE = "distill/beta_feature"
STUDENT_PERPLEXITY = "distill/student_perplexity"
TEACHER_PERPLEXITY = "distill/teacher_perplexity"  # exp of the mean TEACHER_LOSS (metrics_logger)

# On-policy steps (training/on_policy.py): the scheduled share and whether the step sampled, (value, 1) pairs.
ON_POLICY_FRACTION = "distill/on_policy_fraction"
ON_POLICY_STEP = "distill/on_policy_step"
# What the steps that sample log, (sum, count) pairs; (0, 0) on the others. sample/teacher_nll and the perf/*_seconds
# below are measured only on the step that ends a logging window (on_policy.OnPolicy.run_step).
SAMPLE_COMPLETION_LENGTH = "sample/completion_length"
SAMPLE_EOS_RATE = "sample/eos_rate"
SAMPLE_PROMPT_TRUNCATED_RATE = "sample/prompt_truncated_rate"
SAMPLE_TOKENS_PER_SECOND = "sample/tokens_per_second"
SAMPLE_TEACHER_NLL = "sample/teacher_nll"
SAMPLE_SECONDS = "perf/sample_seconds"
TEACHER_SECONDS = "perf/teacher_seconds"
UPDATE_SECONDS = "perf/update_seconds"
SAMPLED_ONLY = (
    SAMPLE_COMPLETION_LENGTH,
    SAMPLE_EOS_RATE,
    SAMPLE_PROMPT_TRUNCATED_RATE,
    SAMPLE_TOKENS_PER_SECOND,
    SAMPLE_TEACHER_NLL,
    SAMPLE_SECONDS,
    TEACHER_SECONDS,
    UPDATE_SECONDS,
)
# Every on-policy step: the train step's seconds (timed steps only) and the host's time dispatching the step's work.
STEP_SECONDS = "perf/step_seconds"
DISPATCH_SECONDS = "perf/dispatch_seconds"

# Per logging window (metrics_logger): wall time per step, tokens per second, TFLOPs, the student's parameters.
STEP_TIME = "perf/step_time_s"
TOKENS_PER_SECOND = "perf/tokens_per_s"
TFLOPS = "perf/per_device_tflops"
TFLOPS_STUDENT = "perf/per_device_tflops_student"
TFLOPS_TEACHER = "perf/per_device_tflops_teacher"
TFLOPS_PER_SEC = "perf/per_device_tflops_per_sec"
TFLOPS_PER_SEC_STUDENT = "perf/per_device_tflops_per_sec_student"
TFLOPS_PER_SEC_TEACHER = "perf/per_device_tflops_per_sec_teacher"
PARAMS_TRAINABLE = "params/trainable"
PARAMS_TOTAL = "params/total"

# What an evaluation step reports, under eval/ (step.make_eval_step).
EVAL_METRICS = (HARD_LOSS, KL_DIV_T1, TEACHER_LOSS, TOPK_COVERAGE)
EVAL_HARD_LOSS = "eval/hard_loss"
EVAL_STUDENT_PERPLEXITY = "eval/student_perplexity"
EVAL_TEACHER_NLL_OF_SAMPLES = "eval/teacher_nll_of_student_samples"  # on-policy evals

# Several teachers in one run (loss.teacher_combination): each teacher's own terms under its name.
_TEACHER = "distill/teacher/{}/{}"
TEACHER_SOFT_LOSS = "soft_loss"  # T^2 * the divergence to this teacher, on the tokens it scored
TEACHER_NLL = "teacher_nll"  # this teacher's CE on the labels, on the tokens it scored
TEACHER_TOKEN_FRACTION = "token_fraction"  # the share of valid tokens this teacher scored (routing), 1 when mixed


def feature_layer(layer: int) -> str:
  """The name of the feature distance of the student's layer ``layer``."""
  return _FEATURE_LAYER.format(int(layer))


def per_teacher(teacher: str, metric: str) -> str:
  """``distill/teacher/<teacher>/<metric>``, ``metric`` one of the ``TEACHER_*`` suffixes above."""
  return _TEACHER.format(teacher, metric)


def eval_name(name: str) -> str:
  """``distill/x`` -> ``eval/x``."""
  if not name.startswith(PREFIX):
    raise ValueError(f"{name!r} is not a distill/ metric")
  return EVAL_PREFIX + name[len(PREFIX) :]
