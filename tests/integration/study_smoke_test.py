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

"""``tools/study_pruning_recovery.py --quick`` end to end: every arm trained, scored and tabulated.

Nothing here says which method wins: six steps on a twelve-step teacher only
show that the pipeline runs and that its numbers are finite and consistent.
"""

import json
import math
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO, subprocess_env

MAIN_ARMS = ("sft", "logit_kd", "recipe", "offline_topk")
SCORES = ("ce", "perplexity", "kl_t1", "top1_agreement")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  out = tmp_path_factory.mktemp("study")
  cmd = [sys.executable, str(REPO / "tools" / "study_pruning_recovery.py"), "--quick", "--output-dir", str(out)]
  proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  with open(out / "study" / "results.json", encoding="utf-8") as f:
    return {"results": json.load(f), "markdown": (out / "study" / "results.md").read_text(), "stdout": proc.stdout}


@pytest.mark.slow  # the quick study itself takes minutes: make test-slow
def test_every_main_arm_has_finite_scores(study):
  arms = study["results"]["arms"]
  assert set(MAIN_ARMS) <= set(arms)
  for name in MAIN_ARMS:
    for score in SCORES + ("gap_recovered",):
      assert math.isfinite(arms[name][score]["mean"]), (name, score, arms[name][score])
    assert 0.0 <= arms[name]["top1_agreement"]["mean"] <= 1.0
    assert arms[name]["kl_t1"]["mean"] >= 0.0


@pytest.mark.slow  # the quick study itself takes minutes: make test-slow
def test_references_are_finite_and_the_teacher_is_its_own_reference(study):
  ref = study["results"]["reference"]
  for name in ("teacher", "pruned"):
    assert all(math.isfinite(ref[name][score]) for score in SCORES), ref[name]
  assert math.isfinite(ref["unigram"]["ce"])
  assert ref["teacher"]["kl_t1"] == 0.0 and ref["teacher"]["top1_agreement"] == 1.0
  assert ref["pruned"]["kl_t1"] > 0.0


@pytest.mark.slow  # the quick study itself takes minutes: make test-slow
def test_table_lists_every_row(study):
  for text in (study["markdown"], study["stdout"]):
    assert "| model | seeds | held-out CE |" in text
    for label in (
        "unigram",
        "teacher",
        "pruned student",
        "(a) SFT only",
        "(b) logit KD",
        "(c) b + features",
        "(d) b offline",
    ):
      assert label in text, label


@pytest.mark.slow  # the quick study itself takes minutes: make test-slow
def test_final_score_matches_the_trainers_own_eval_of_the_same_batches(study):
  # Two code paths, one checkpoint: the trainer's last in-loop eval and the study's reload of the saved student.
  for run in study["results"]["runs"]:
    curve = run["curve"]
    assert curve["eval_step"][-1] == run["steps"]
    assert abs(curve["eval_ce"][-1] - run["scores"]["ce"]) < 1e-3, run["arm"]
    if run["arm"] != "offline_topk":  # an offline run's evals have no teacher, hence no KL
      assert abs(curve["eval_kl_t1"][-1] - run["scores"]["kl_t1"]) < 1e-3, run["arm"]


@pytest.mark.slow  # the quick study itself takes minutes: make test-slow
def test_learning_curves_come_from_the_metrics_file(study):
  for run in study["results"]["runs"]:
    curve = run["curve"]
    assert curve["train_step"] == sorted(curve["train_step"]) and len(curve["train_step"]) >= 2
    assert curve["eval_step"] == sorted(curve["eval_step"]) and len(curve["eval_step"]) >= 2
    assert all(math.isfinite(v) for v in curve["eval_ce"] + curve["train_ce"])


@pytest.mark.slow  # the quick study itself takes minutes: make test-slow
def test_offline_arm_trains_from_its_own_cache_of_the_same_batches(study):
  runs = {run["arm"]: run for run in study["results"]["runs"] if run["seed"] == 0}
  offline, online = runs["offline_topk"], runs["logit_kd"]
  assert offline["cache_seconds"] > 0.0
  assert any(arg.startswith("offline_data_dir=") for arg in offline["argv"])
  assert not any(arg.startswith("offline_data_dir=") for arg in online["argv"])
  # Same YAML, same seed, same batches: the first window's CE differs only by the top-k truncation (a different
  # data order moved it by 0.15 to 0.9 nats here).
  assert abs(offline["curve"]["train_ce"][0] - online["curve"]["train_ce"][0]) < 0.05


@pytest.mark.slow  # the quick study itself takes minutes: make test-slow
def test_plots_listed_are_written(study):
  # matplotlib is optional: without it the list is empty and the table is still written.
  for path in study["results"]["plots"]:
    assert (REPO / path).is_file() or pathlib.Path(path).is_file(), path


# (arm, distill_divergence, distill_divergence_beta, distill_skew_lambda) that the arm must hand to the trainer.
DIVERGENCE_ARMS = (
    ("kd_forward_kl", "forward_kl", None, None),
    ("kd_reverse_kl", "reverse_kl", None, None),
    ("kd_jsd", "jsd", 0.5, None),
    ("kd_skew_kl", "skew_kl", None, 0.1),
)


def _fake_checkpoint(path: pathlib.Path) -> str:
  """A directory that passes the config's checkpoint-path check; nothing here restores it."""
  path.mkdir(parents=True)
  (path / "_METADATA").write_text("{}", encoding="utf-8")
  return str(path)


def test_divergence_arms_hand_their_keys_to_the_trainer_settings(tmp_path):
  """Plumbing only: each divergence arm is recipe (b) plus its keys, and config.build parses them into the settings.

  Whether the loss honours the keys is the loss paths' business (tested there), not the study's.
  """
  from maxtext_distill_plugin.configuration import config as config_lib  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.demo import data as demo_data  # pylint: disable=import-outside-toplevel
  from tools.study import arms  # pylint: disable=import-outside-toplevel
  from tools.study import inputs  # pylint: disable=import-outside-toplevel

  data = demo_data.prepare(str(tmp_path / "data"), 128, vocab_size=512, max_files=8)
  study_inputs = inputs.Inputs(
      data, _fake_checkpoint(tmp_path / "teacher" / "items"), "", "fingerprint", str(tmp_path / "caches")
  )
  student = _fake_checkpoint(tmp_path / "student" / "items")
  run_dir = str(tmp_path / "runs" / "arm")
  base = inputs.arm_argv(arms.LOGIT_KD, study_inputs, run_dir, inputs.QUICK, 0, student)
  chosen = arms.select(",".join(name for name, *_ in DIVERGENCE_ARMS))
  assert [arm.name for arm in chosen] == [name for name, *_ in DIVERGENCE_ARMS]
  for arm, (_, divergence, beta, skew_lambda) in zip(chosen, DIVERGENCE_ARMS):
    argv = inputs.arm_argv(arm, study_inputs, run_dir, inputs.QUICK, 0, student)
    assert arm.yaml == arms.LOGIT_KD.yaml and not arm.offline
    assert argv == base + list(arm.overrides), arm.name
    settings = config_lib.build(argv).settings
    assert settings.distill_divergence == divergence, arm.name
    assert settings.distill_divergence_beta == beta and settings.distill_skew_lambda == skew_lambda, arm.name


def test_unknown_arm_is_refused_before_anything_runs(tmp_path):
  cmd = [sys.executable, str(REPO / "tools" / "study_pruning_recovery.py"), "--quick", "--arms", "kd_jsd,kd_nope"]
  cmd += ["--output-dir", str(tmp_path)]
  proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2
  assert "--arms='kd_jsd,kd_nope'" in proc.stderr and "kd_nope" in proc.stderr and "kd_reverse_kl" in proc.stderr
  assert not any(tmp_path.iterdir())  # nothing was made
