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

"""What the plugin cannot honour is refused before any model is built: exit 2, naming the key and the fix."""

import pytest

from maxtext_distill_plugin import cli
from maxtext_distill_plugin.configuration import config
from tests.conftest import TINY_YAML

_FEATURES = ("distill_beta=0.5", "distill_layer_indices=[0]")
REFUSED = [
    ("student_decoder_cannot_sow", [*_FEATURES, "decoder_block=simple"], "student.decoder_block='simple'"),
    ("teacher_decoder_cannot_sow", [*_FEATURES, "teacher_overrides.decoder_block=simple"], "teacher.decoder_block"),
    ("router_bias_updates", ["routed_bias=True", "routed_bias_update_rate=0.01"], "routed_bias_update_rate"),
]


def _argv(tmp_path, teacher_checkpoint, extra):
  out = tmp_path / "out"
  return out, [
      "train_distill",
      TINY_YAML,
      f"base_output_directory={out}",
      "run_name=r",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
      *extra,
  ]


@pytest.mark.parametrize("case_id,extra,needle", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_exit_2_naming_the_key(case_id, extra, needle, tmp_path, capsys, teacher_checkpoint):
  del case_id
  out, argv = _argv(tmp_path, teacher_checkpoint, extra)
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  err = capsys.readouterr().err
  assert exit_info.value.code == 2
  assert needle in err and "Fix" in err, err[-2000:]
  assert not out.exists(), "nothing may be written before the error"


def test_a_decoder_that_cannot_sow_still_distills_logits_only(tmp_path, teacher_checkpoint):
  # The student only: a teacher of another decoder than its checkpoint's is refused (checkpoint_check_test.py).
  _, argv = _argv(tmp_path, teacher_checkpoint, ["decoder_block=simple"])
  configs = config.build(argv)
  assert not configs.settings.extract_features
