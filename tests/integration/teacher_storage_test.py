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

"""The frozen teacher's storage: parameters in its compute dtype by default, float32 when asked, logits close.

MaxText's ``weight_dtype`` (float32 by default) is a training choice: a master copy for the optimizer. The teacher
never trains, so ``distill_teacher_weight_dtype=compute`` (the default) stores it in its ``dtype``, half the bytes
in bfloat16; ``float32`` keeps the old storage, and a ``weight_dtype`` in ``teacher_overrides`` wins over both.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen import partitioning as nn_partitioning
import numpy as np

from maxtext_distill_plugin.configuration import config as config_lib
from maxtext_distill_plugin.training import trainer
from tests.conftest import TINY_YAML


def _teacher(teacher_checkpoint, tmp_path, *extra):
  """The teacher's config, its parameters' dtypes and bytes, and its logits on a fixed batch."""
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  argv = ["train_distill", TINY_YAML, f"teacher_overrides.load_parameters_path={teacher_checkpoint}"]
  argv += [f"base_output_directory={tmp_path}", "run_name=r", *extra]
  config = config_lib.build(argv).teacher
  mesh = jax.sharding.Mesh(maxtext_utils.create_device_mesh(config), config.mesh_axes)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(config.logical_axis_rules):
    graphdef, state = trainer.build_teacher(config, mesh)
    params = jax.tree.leaves(nnx.state(nnx.merge(graphdef, state), nnx.Param))
    tokens = (jnp.arange(64, dtype=jnp.int32).reshape(2, 32) * 7) % int(config.vocab_size)
    logits = nnx.merge(graphdef, state)(
        decoder_input_tokens=tokens,
        decoder_positions=jnp.broadcast_to(jnp.arange(32), (2, 32)),
        decoder_segment_ids=jnp.ones((2, 32), jnp.int32),
        enable_dropout=False,
    )
  return config, {str(p.dtype) for p in params}, sum(p.nbytes for p in params), np.asarray(logits, np.float64)


def test_teacher_is_stored_in_its_compute_dtype_unless_float32_is_asked_for(teacher_checkpoint, tmp_path):
  # The checkpoint was trained in float32; the teacher computes in bfloat16 here.
  compute = ("teacher_overrides.dtype=bfloat16",)
  lean_config, lean_dtypes, lean_bytes, lean_logits = _teacher(teacher_checkpoint, tmp_path / "a", *compute)
  full_config, full_dtypes, full_bytes, full_logits = _teacher(
      teacher_checkpoint, tmp_path / "b", *compute, "distill_teacher_weight_dtype=float32"
  )
  assert jnp.dtype(lean_config.weight_dtype) == jnp.bfloat16 and lean_dtypes == {"bfloat16"}
  assert jnp.dtype(full_config.weight_dtype) == jnp.float32 and full_dtypes == {"float32"}
  assert lean_bytes * 2 == full_bytes
  # The same teacher: its bfloat16 forward rounds float32-stored weights to bfloat16 before every use anyway (measured
  # bit-equal on the CPU), so storing them rounded changes no logit beyond float32 noise.
  assert np.abs(full_logits).max() > 1.0
  np.testing.assert_allclose(lean_logits, full_logits, rtol=0, atol=1e-6 * np.abs(full_logits).max())
  # A float32 compute dtype keeps float32 storage; an explicit teacher_overrides.weight_dtype wins.
  assert jnp.dtype(_config(teacher_checkpoint, tmp_path).weight_dtype) == jnp.float32
  pinned = _config(teacher_checkpoint, tmp_path, *compute, "teacher_overrides.weight_dtype=float32")
  assert jnp.dtype(pinned.weight_dtype) == jnp.float32


def _config(teacher_checkpoint, tmp_path, *extra):
  argv = ["train_distill", TINY_YAML, f"teacher_overrides.load_parameters_path={teacher_checkpoint}"]
  return config_lib.build(argv + [f"base_output_directory={tmp_path}", "run_name=c", *extra]).teacher
