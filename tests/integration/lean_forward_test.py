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

"""lean_forward on real MaxText 0.2.5 models: hidden @ unembed reproduces the logits, and the lean loss the dense one.

The teacher is the 2-layer checkpoint of the ``teacher_checkpoint`` fixture with an untied ``logits_dense``; the
student is a fresh 1-layer model with tied embeddings, ``normalize_embedding_logits`` and a final logit soft cap, so
both branches of the output head are covered.
"""

import contextlib
import dataclasses
import functools
from typing import Any

from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import TINY_YAML

SOFTCAP = 4.0  # small enough that the tanh visibly bends the tiny model's logits


@dataclasses.dataclass
class _Models:
  configs: Any  # config.DistillConfigs
  mesh: Any
  batch: dict
  student: tuple  # (graphdef, state)
  teacher: tuple
  tiled_teacher: tuple  # the teacher again, with num_vocab_tiling=2

  def context(self):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn_partitioning.axis_rules(self.configs.student.logical_axis_rules))
    return stack


@pytest.fixture(scope="module")
def models(tmp_path_factory, teacher_checkpoint) -> _Models:
  from maxtext.input_pipeline.input_pipeline_interface import create_data_iterator  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

  def build(*extra):
    return config.build([
        "lean_forward_test",
        TINY_YAML,
        "run_name=lean",
        f"base_output_directory={tmp_path_factory.mktemp('lean')}",
        f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
        "logits_via_embedding=True",
        f"final_logits_soft_cap={SOFTCAP}",
        *extra,
    ])

  configs = build()
  tiled = build("teacher_overrides.num_vocab_tiling=2")
  assert configs.student.logits_via_embedding and configs.student.normalize_embedding_logits
  assert not configs.teacher.logits_via_embedding and tiled.teacher.num_vocab_tiling == 2
  mesh = maxtext_utils.get_mesh_from_config(configs.student)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(configs.student.logical_axis_rules):
    student, teacher, tiled_teacher = (
        nnx.split(model_creation_utils.from_pretrained(cfg, mesh=mesh))
        for cfg in (configs.student, configs.teacher, tiled.teacher)
    )
  batch = next(create_data_iterator(configs.student, mesh)[0])
  return _Models(configs, mesh, batch, student, teacher, tiled_teacher)


def _dense_logits(graphdef, state, batch, settings):
  from maxtext_distill_plugin.model import forward as model_forward  # pylint: disable=import-outside-toplevel

  return model_forward.forward(nnx.merge(graphdef, state), batch, settings=settings, enable_dropout=False)[0]


def _lean_logits(graphdef, state, batch):
  from maxtext_distill_plugin.model import lean_forward  # pylint: disable=import-outside-toplevel

  hidden, unembed, softcap = lean_forward.forward_hidden(nnx.merge(graphdef, state), batch, enable_dropout=False)
  logits = jnp.einsum("bsd,dv->bsv", hidden, unembed, preferred_element_type=jnp.float32)
  return (softcap * jnp.tanh(logits / softcap) if softcap else logits), softcap


@pytest.mark.parametrize("which", ("teacher", "student"))
def test_hidden_times_unembed_equals_model_logits(models, which):
  graphdef, state = getattr(models, which)
  with models.context():
    want = jax.jit(functools.partial(_dense_logits, graphdef, settings=models.configs.settings))(state, models.batch)
    got, softcap = jax.jit(functools.partial(_lean_logits, graphdef))(state, models.batch)
  assert softcap == (SOFTCAP if which == "student" else None)
  assert got.shape == want.shape == models.batch["inputs"].shape + (models.configs.student.vocab_size,)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  if which == "student":  # the soft cap is really in play
    assert float(jnp.max(jnp.abs(want))) > 0.5 * SOFTCAP


def test_vocab_tiling_config_gives_the_same_hidden_states(models):
  """With num_vocab_tiling > 1 the model itself returns no logits; forward_hidden still works."""
  from maxtext_distill_plugin.model import lean_forward  # pylint: disable=import-outside-toplevel

  def hidden_and_unembed(graphdef, state):
    hidden, unembed, _ = lean_forward.forward_hidden(nnx.merge(graphdef, state), models.batch, enable_dropout=False)
    return hidden, unembed

  with models.context():
    plain = jax.jit(functools.partial(hidden_and_unembed, models.teacher[0]))(models.teacher[1])
    tiled = jax.jit(functools.partial(hidden_and_unembed, models.tiled_teacher[0]))(models.tiled_teacher[1])
  for got, want in zip(tiled, plain):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_lean_loss_matches_dense_loss_and_never_builds_full_logits(models):
  """Objective, metrics and parameter gradients of the whole student: dense forward path vs lean path."""
  from maxtext_distill_plugin.loss import chunked_objective  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.loss import objective  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.model import lean_forward  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.model import forward as model_forward  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.teachers import kinds  # pylint: disable=import-outside-toplevel

  settings, batch = models.configs.settings, models.batch
  weights = objective.LossWeights(alpha=jnp.float32(0.4), temperature=jnp.float32(2.0), beta=jnp.float32(0.0))
  student_graphdef, student_state = models.student
  teacher_graphdef, teacher_state = models.teacher
  student_params, student_rest = nnx.split_state(student_state, nnx.Param, ...)

  def dense_sum(params):
    teacher = kinds.FrozenModel(teacher_graphdef, settings).head(teacher_state, batch, lean=False)
    logits = _dense_logits(student_graphdef, nnx.merge_state(params, student_rest), batch, settings)
    total, _, metrics = objective.distillation_terms(
        logits, teacher, batch["targets"], model_forward.token_mask(batch), weights
    )
    return total, metrics

  def lean_sum(params):
    teacher = nnx.merge(teacher_graphdef, jax.lax.stop_gradient(teacher_state))
    teacher_hidden, teacher_unembed, teacher_softcap = lean_forward.forward_hidden(teacher, batch, enable_dropout=False)
    student = nnx.merge(student_graphdef, nnx.merge_state(params, student_rest))
    hidden, unembed, softcap = lean_forward.forward_hidden(student, batch, enable_dropout=False)
    total, _, metrics = chunked_objective.distillation_terms_from_hidden(
        hidden,
        unembed,
        teacher_hidden,
        teacher_unembed,
        batch["targets"],
        model_forward.token_mask(batch),
        weights,
        seq_chunk=8,
        vocab_chunk=128,
        student_logit_softcap=softcap,
        teacher_logit_softcap=teacher_softcap,
        diagnostics=True,
    )
    return total, metrics

  with models.context():
    dense = jax.jit(jax.value_and_grad(dense_sum, has_aux=True))
    lean = jax.jit(jax.value_and_grad(lean_sum, has_aux=True))
    (want_total, want_metrics), want_grads = dense(student_params)
    (got_total, got_metrics), got_grads = lean(student_params)
    dense_text = dense.lower(student_params).compile().as_text()
    lean_text = lean.lower(student_params).compile().as_text()
  np.testing.assert_allclose(float(got_total), float(want_total), rtol=1e-5)
  for name, (total, count) in want_metrics.items():
    np.testing.assert_allclose(float(got_metrics[name][0]), float(total), rtol=1e-5, atol=1e-5, err_msg=name)
    assert float(got_metrics[name][1]) == float(count)
  flat_want, flat_got = jax.tree.leaves(want_grads), jax.tree.leaves(got_grads)
  assert len(flat_want) == len(flat_got) > 0
  for got, want in zip(flat_got, flat_want):
    _assert_close_at_float32_noise(np.asarray(got, np.float64), np.asarray(want, np.float64))
  full = f"[{batch['inputs'].shape[0]},{batch['inputs'].shape[1]},{models.configs.student.vocab_size}]"
  assert full in dense_text  # the check below can see such an array
  assert full not in lean_text, f"a {full} array survives in the compiled lean step"


def _assert_close_at_float32_noise(got, want):
  """Two float32 evaluations of one gradient agree to summation-order noise, which scales with the array, not 1e-5.

  The dense path contracts a [B, S, V] product in one matmul, the lean one in tiles, and XLA fuses the two programs
  differently; the tied embedding's gradient sums B·S·V terms, so one element can move by ~1e-3 of the array's
  largest entry (measured 6e-5 on an entry of 0.038, while jitted dense, eager dense and eager lean agree). A wrong
  term (a missing T, the soft cap's derivative, a dropped tile) moves the whole array by O(1) of its norm, which both
  bounds below still catch.
  """
  scale = float(np.max(np.abs(want)))
  assert scale > 0
  relative_norm_error = float(np.linalg.norm(got - want) / np.linalg.norm(want))
  assert relative_norm_error < 1e-4, relative_norm_error
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * scale)


@pytest.mark.parametrize("chunked", [False, True], ids=["dense", "chunked"])
def test_student_cross_entropy_matches_numpy(models, chunked):
  """The held-out CE that offline runs log (no teacher in the batch), against float64 NumPy on the model's logits."""
  from maxtext_distill_plugin.training import student_objective  # pylint: disable=import-outside-toplevel

  settings = models.configs.settings.model_copy(update={"distill_seq_chunk": 5, "distill_vocab_chunk": 100})
  with models.context():
    logits = np.asarray(_dense_logits(*models.student, models.batch, settings), np.float64)
    total, count = student_objective.student_cross_entropy(
        nnx.merge(*models.student), models.batch, settings, chunked=chunked
    )
  labels, mask = np.asarray(models.batch["targets"]), np.asarray(models.batch["targets_segmentation"]) != 0
  peak = logits.max(-1, keepdims=True)
  log_probs = logits - peak - np.log(np.exp(logits - peak).sum(-1, keepdims=True))
  ce = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
  assert int(count) == int(mask.sum()) > 0
  np.testing.assert_allclose(float(total), ce[mask].sum(), rtol=1e-5)
