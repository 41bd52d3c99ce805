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

"""Tests for maxtext_distill_plugin.loss.chunked_objective against objective.distillation_terms on full logits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import chunked_objective
from maxtext_distill_plugin.loss import divergences
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from tests import numpy_reference as ref
from tests.unit.lean_loss_testing import GRAD_ATOL, GRAD_RTOL, VALUE_ATOL, VALUE_RTOL
from tests.unit.lean_loss_testing import assert_same_objective, value_and_grads

# S=11 divides by neither chunk below; V=37 does not divide by 10. Widths differ between the models.
STUDENT_DIM, TEACHER_DIM, FEATURE_DIM, LAYERS, VOCAB = 8, 12, 8, 2, 37
SEQ_CHUNK = 4
# Ragged right padding plus interior holes (as with packing); 22 valid tokens out of 33.
MASK = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=bool,
)
METRIC_NAMES = (
    "distill/soft_loss",
    "distill/hard_loss",
    "distill/teacher_loss",
    "distill/divergence_at_T",
    "distill/kl_div_at_T",
    "distill/kl_div_T1",
    "distill/out_proj_feature_loss",
    "distill/total_loss",
)
COVERAGE_TOP_K = 5  # the diagnostics' k, below V so the lean running top-k merges across tiles
DIAGNOSTIC_NAMES = (
    "distill/top1_agreement",
    "distill/teacher_entropy",
    "distill/student_entropy",
    "distill/topk_coverage",
)


def _inputs(seed, mask=MASK, vocab=VOCAB):
  rng = np.random.default_rng(seed)
  batch, seq = mask.shape
  return {
      "student_hidden": rng.standard_normal((batch, seq, STUDENT_DIM)).astype(np.float32),
      "student_unembed": (2.0 * rng.standard_normal((STUDENT_DIM, vocab)) / np.sqrt(STUDENT_DIM)).astype(np.float32),
      "teacher_hidden": rng.standard_normal((batch, seq, TEACHER_DIM)).astype(np.float32),
      "teacher_unembed": (3.0 * rng.standard_normal((TEACHER_DIM, vocab)) / np.sqrt(TEACHER_DIM)).astype(np.float32),
      "labels": rng.integers(0, vocab, size=(batch, seq)).astype(np.int32),
      "mask": mask,
      "student_features": rng.standard_normal((LAYERS, batch, seq, FEATURE_DIM)).astype(np.float32),
      "teacher_features": rng.standard_normal((LAYERS, batch, seq, FEATURE_DIM)).astype(np.float32),
  }


def _weights(alpha, temperature, beta=0.4):
  return objective.LossWeights(alpha=jnp.float32(alpha), temperature=jnp.float32(temperature), beta=jnp.float32(beta))


def _capped(logits, softcap):
  return logits if softcap is None else softcap * jnp.tanh(logits / softcap)


def _dense(student_hidden, student_unembed, student_features, inputs, weights, loss_type, softcaps):
  """The reference: objective.distillation_terms on the full [B, S, V] logits of both models."""
  student_softcap, teacher_softcap = softcaps or (None, None)
  teacher_logits = _capped(
      jnp.asarray(inputs["teacher_hidden"]) @ jnp.asarray(inputs["teacher_unembed"]), teacher_softcap
  )
  teacher = heads.TeacherLogits(
      logits_BxSxV=jax.lax.stop_gradient(teacher_logits),
      features_LxBxSxD=None if loss_type is None else jnp.asarray(inputs["teacher_features"]),
  )
  return objective.distillation_terms(
      _capped(student_hidden @ student_unembed, student_softcap),
      teacher,
      jnp.asarray(inputs["labels"]),
      jnp.asarray(inputs["mask"]),
      weights,
      student_features_LxBxSxD=None if loss_type is None else student_features,
      feature_loss_type=loss_type or "cosine",
      top_k=COVERAGE_TOP_K,
  )


def _lean(student_hidden, student_unembed, student_features, inputs, weights, loss_type, softcaps, vocab_chunk):
  student_softcap, teacher_softcap = softcaps or (None, None)
  return chunked_objective.distillation_terms_from_hidden(
      student_hidden,
      student_unembed,
      jnp.asarray(inputs["teacher_hidden"]),
      jnp.asarray(inputs["teacher_unembed"]),
      jnp.asarray(inputs["labels"]),
      jnp.asarray(inputs["mask"]),
      weights,
      student_features_LxBxSxD=None if loss_type is None else student_features,
      teacher_features_LxBxSxD=None if loss_type is None else jnp.asarray(inputs["teacher_features"]),
      feature_loss_type=loss_type or "cosine",
      seq_chunk=SEQ_CHUNK,
      vocab_chunk=vocab_chunk,
      student_logit_softcap=student_softcap,
      teacher_logit_softcap=teacher_softcap,
      diagnostics=True,
      coverage_top_k=COVERAGE_TOP_K,
  )


def _assert_lean_matches_dense(inputs, weights, loss_type, softcaps, vocab_chunk):
  dense = functools.partial(_dense, loss_type=loss_type, softcaps=softcaps)
  lean = functools.partial(_lean, loss_type=loss_type, softcaps=softcaps, vocab_chunk=vocab_chunk)
  want = value_and_grads(dense, inputs, weights)
  got = value_and_grads(lean, inputs, weights)
  layers = () if loss_type is None else range(inputs["student_features"].shape[0])
  layer_names = tuple(f"distill/out_proj_feature_loss/layer_{i}" for i in layers)
  assert_same_objective(got, want, inputs["mask"], METRIC_NAMES + DIAGNOSTIC_NAMES + layer_names)
  got_grads = got[3]
  # The test is only meaningful if the gradients are not trivially zero.
  assert np.abs(np.asarray(got_grads[1])).max() > 1e-3


@pytest.mark.parametrize("vocab_chunk", (None, 10), ids=("whole_vocab", "vocab_chunk_10"))
@pytest.mark.parametrize("loss_type", (None, "cosine"), ids=("no_features", "cosine"))
@pytest.mark.parametrize("alpha", (0.0, 0.3, 1.0))
def test_matches_dense_objective(alpha, loss_type, vocab_chunk):
  _assert_lean_matches_dense(_inputs(0), _weights(alpha, 2.0), loss_type, None, vocab_chunk)


@pytest.mark.parametrize(
    "temperature,loss_type,softcaps,vocab_chunk",
    (
        (0.5, "l2", None, 10),
        (1.0, None, None, 37),
        (3.0, None, (3.0, 3.0), 10),
        (0.7, "cosine", (5.0, None), None),
        (2.0, None, (None, 2.5), 16),
    ),
)
def test_matches_dense_objective_other_temperatures_and_softcaps(temperature, loss_type, softcaps, vocab_chunk):
  _assert_lean_matches_dense(_inputs(1), _weights(0.6, temperature), loss_type, softcaps, vocab_chunk)


def test_single_tile_and_unpadded_batch():
  """seq_chunk >= S and vocab_chunk >= V: one tile, no padding anywhere."""
  inputs = _inputs(2, mask=np.ones((2, 3), bool))
  weights = _weights(0.5, 2.0)
  got = chunked_objective.distillation_terms_from_hidden(
      *(jnp.asarray(inputs[k]) for k in ("student_hidden", "student_unembed", "teacher_hidden", "teacher_unembed")),
      jnp.asarray(inputs["labels"]),
      jnp.asarray(inputs["mask"]),
      weights,
      seq_chunk=64,
      vocab_chunk=1000,
  )
  student_hidden, student_unembed = jnp.asarray(inputs["student_hidden"]), jnp.asarray(inputs["student_unembed"])
  want = _dense(student_hidden, student_unembed, None, inputs, weights, loss_type=None, softcaps=None)
  np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=VALUE_RTOL, atol=VALUE_ATOL)


def test_teacher_gets_no_gradient_and_padding_gets_none():
  inputs = _inputs(3)

  def objective_sum(student_hidden, teacher_hidden, teacher_unembed):
    return chunked_objective.distillation_terms_from_hidden(
        student_hidden,
        jnp.asarray(inputs["student_unembed"]),
        teacher_hidden,
        teacher_unembed,
        jnp.asarray(inputs["labels"]),
        jnp.asarray(inputs["mask"]),
        _weights(0.5, 2.0),
        seq_chunk=SEQ_CHUNK,
        vocab_chunk=10,
    )[0]

  args = (inputs["student_hidden"], inputs["teacher_hidden"], inputs["teacher_unembed"])
  d_student, d_teacher_hidden, d_teacher_unembed = jax.grad(objective_sum, argnums=(0, 1, 2))(*map(jnp.asarray, args))
  assert not np.any(np.asarray(d_teacher_hidden)) and not np.any(np.asarray(d_teacher_unembed))
  assert np.all(np.asarray(d_student)[~MASK] == 0.0)
  assert np.all(np.abs(np.asarray(d_student)[MASK]).max(axis=-1) > 0.0)


def test_bfloat16_inputs_keep_their_dtype_and_stay_close():
  inputs = _inputs(4)
  weights = _weights(0.5, 2.0)
  bf16 = {k: jnp.asarray(inputs[k], jnp.bfloat16) for k in ("student_hidden", "student_unembed")}
  lean = functools.partial(_lean, loss_type=None, softcaps=None, vocab_chunk=10)
  total, _, _ = lean(bf16["student_hidden"], bf16["student_unembed"], None, inputs, weights)
  grads = jax.grad(lambda h, w: lean(h, w, None, inputs, weights)[0], argnums=(0, 1))(*bf16.values())
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  hidden_f32, unembed_f32 = (x.astype(jnp.float32) for x in bf16.values())
  want, _, _ = _dense(hidden_f32, unembed_f32, None, inputs, weights, loss_type=None, softcaps=None)
  np.testing.assert_allclose(float(total), float(want), rtol=1e-4)


def test_rejects_mismatched_shapes():
  inputs = _inputs(5)
  args = [jnp.asarray(inputs[k]) for k in ("student_hidden", "student_unembed", "teacher_hidden", "teacher_unembed")]
  labels, mask = jnp.asarray(inputs["labels"]), jnp.asarray(inputs["mask"])
  with pytest.raises(ValueError, match="vocabulary"):
    chunked_objective.distillation_terms_from_hidden(*args[:3], args[3][:, :-1], labels, mask, _weights(0.5, 1.0))
  with pytest.raises(ValueError, match="hidden"):
    chunked_objective.distillation_terms_from_hidden(args[0], args[1][:-1], *args[2:], labels, mask, _weights(0.5, 1.0))
  with pytest.raises(ValueError, match="positive"):
    chunked_objective.distillation_terms_from_hidden(*args, labels, mask, _weights(0.5, 1.0), seq_chunk=0)


# ----------------------------------------------------------------------------- Compiled memory, not timing

MEMORY_B, MEMORY_S, MEMORY_D, MEMORY_V = 2, 256, 64, 8192


def _compiled_value_and_grad(loss_fn, shapes=(MEMORY_B, MEMORY_S, MEMORY_D, MEMORY_V)):
  """The compiled jit(value_and_grad) of an objective_sum w.r.t. student hidden states and unembedding."""
  batch, seq, dim, vocab = shapes
  hidden = jax.ShapeDtypeStruct((batch, seq, dim), jnp.float32)
  unembed = jax.ShapeDtypeStruct((dim, vocab), jnp.float32)
  labels = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
  mask = jax.ShapeDtypeStruct((batch, seq), jnp.bool_)
  weights = _weights(0.5, 2.0)
  return (
      jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
      .lower(hidden, unembed, hidden, unembed, labels, mask, weights)
      .compile()
  )


def _dense_objective_sum(student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, mask, weights):
  teacher = heads.TeacherLogits(logits_BxSxV=jax.lax.stop_gradient(teacher_hidden @ teacher_unembed))
  return objective.distillation_terms(student_hidden @ student_unembed, teacher, labels, mask, weights)[0]


@pytest.mark.parametrize("seq_chunk,vocab_chunk", ((32, None), (64, 1024)))
def test_compiled_temp_memory_is_a_fraction_of_dense(seq_chunk, vocab_chunk):
  def lean_objective_sum(*args):
    return chunked_objective.distillation_terms_from_hidden(*args, seq_chunk=seq_chunk, vocab_chunk=vocab_chunk)[0]

  dense = _compiled_value_and_grad(_dense_objective_sum)
  lean = _compiled_value_and_grad(lean_objective_sum)
  dense_bytes = dense.memory_analysis().temp_size_in_bytes
  lean_bytes = lean.memory_analysis().temp_size_in_bytes
  print(
      f"\n[B={MEMORY_B}, S={MEMORY_S}, D={MEMORY_D}, V={MEMORY_V}] temp_size_in_bytes: dense={dense_bytes}"
      f" ({dense_bytes / 2**20:.1f} MiB), chunked(seq_chunk={seq_chunk}, vocab_chunk={vocab_chunk})={lean_bytes}"
      f" ({lean_bytes / 2**20:.1f} MiB), ratio={lean_bytes / dense_bytes:.3f}"
  )
  assert lean_bytes < 0.25 * dense_bytes, (lean_bytes, dense_bytes)
  # Structural check as well: no [B, S, V] float32 array anywhere in the compiled lean program.
  assert f"f32[{MEMORY_B},{MEMORY_S},{MEMORY_V}]" in dense.as_text()
  lean_text = lean.as_text()
  assert f"[{MEMORY_B},{MEMORY_S},{MEMORY_V}]" not in lean_text
  assert f"[{MEMORY_B * MEMORY_S},{MEMORY_V}]" not in lean_text


# ----------------------------------------------------------------------------- Every divergence, against float64 NumPy

# (divergence, param): the registry's six, JSD at both endpoints and inside, the skew KLs at lambda = 0.1.
DIVERGENCE_CASES = (
    ("forward_kl", None),
    ("reverse_kl", None),
    ("jsd", 0.0),
    ("jsd", 0.5),
    ("jsd", 1.0),
    ("skew_kl", 0.1),
    ("skew_reverse_kl", 0.1),
    ("tvd", None),
)
DIVERGENCE_IDS = [name if param is None else f"{name}_{param}" for name, param in DIVERGENCE_CASES]
SOFTCAPS = (4.0, 3.0)  # student, teacher: both active at these logit scales
Z_LOSS = 1e-2


_ARRAYS = ("student_hidden", "student_unembed", "teacher_hidden", "teacher_unembed", "labels", "mask")


@functools.lru_cache(maxsize=None)
def _compiled_lean(divergence, param, softcaps, vocab_chunk, grad, options):
  """One jitted lean objective per static configuration, shared by the tests (inputs and weights are arguments)."""

  def objective_sum(student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, mask, weights):
    total, count, metrics = chunked_objective.distillation_terms_from_hidden(
        student_hidden,
        student_unembed,
        teacher_hidden,
        teacher_unembed,
        labels,
        mask,
        weights,
        seq_chunk=SEQ_CHUNK,
        vocab_chunk=vocab_chunk,
        student_logit_softcap=softcaps[0],
        teacher_logit_softcap=softcaps[1],
        divergence=divergence,
        divergence_param=param,
        **dict(options),
    )
    return total, (count, metrics)

  if not grad:
    return jax.jit(objective_sum)
  return jax.jit(jax.value_and_grad(objective_sum, argnums=(0, 1), has_aux=True))


def _lean_value_and_grads(divergence, param, inputs, *, softcaps=SOFTCAPS, vocab_chunk=10, grad=True, **options):
  """``weights -> ((total, (count, metrics)), (d hidden, d unembed))`` of the lean objective on ``inputs``
  (``weights -> (total, (count, metrics))`` when ``grad`` is false)."""
  run = _compiled_lean(divergence, param, softcaps, vocab_chunk, grad, tuple(sorted(options.items())))
  arrays = [jnp.asarray(inputs[name]) for name in _ARRAYS]
  return lambda weights: run(*arrays, weights)


@pytest.mark.parametrize("divergence,param", DIVERGENCE_CASES, ids=DIVERGENCE_IDS)
def test_every_divergence_matches_numpy_float64(divergence, param):
  """Values, metrics and student gradients of the lean path = the float64 dense reference, T in {0.5, 1, 2}.

  Padding mask with holes, soft caps on both models, S = 11 over seq_chunk 4, V = 37 over vocab_chunk 10, z-loss on.
  """
  inputs = _inputs(10)
  run = _lean_value_and_grads(divergence, param, inputs, z_loss_multiplier=Z_LOSS)
  for temperature in (0.5, 1.0, 2.0):
    (total, (count, metrics)), grads = run(_weights(0.7, temperature))
    sums, want_count, want_grads = ref.lean_objective(
        inputs, alpha=0.7, temperature=temperature, divergence=divergence, param=param, softcaps=SOFTCAPS, z_loss=Z_LOSS
    )
    label = f"{divergence}({param}) T={temperature}"
    np.testing.assert_allclose(float(total), sums["distill/total_loss"], rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=label)
    assert float(count) == want_count == MASK.sum()
    assert set(metrics) == set(METRIC_NAMES) | {"distill/z_loss"}, label
    for name in metrics:
      np.testing.assert_allclose(
          float(metrics[name][0]), sums[name], rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=f"{label} {name}"
      )
    for what, got, want in zip(("hidden", "unembed"), grads, want_grads):
      np.testing.assert_allclose(np.asarray(got), want, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=f"{label} d {what}")
    assert np.abs(want_grads[1]).max() > 1e-2  # the comparison is not between two zeros


@pytest.mark.parametrize("divergence,param", DIVERGENCE_CASES, ids=DIVERGENCE_IDS)
def test_numpy_reference_gradient_is_the_derivative_of_its_value(divergence, param):
  """The reference's hand-derived gradient agrees with central differences of its own value (float64)."""
  inputs = _inputs(11, mask=MASK[:2, :5], vocab=9)
  kwargs = {"alpha": 0.7, "temperature": 0.5, "divergence": divergence, "param": param, "softcaps": SOFTCAPS}
  _, _, (_, d_unembed) = ref.lean_objective(inputs, **kwargs)
  step = 1e-6
  for index in ((0, 0), (3, 4), (7, 8)):
    values = []
    for sign in (1.0, -1.0):
      moved = dict(inputs, student_unembed=np.asarray(inputs["student_unembed"], np.float64).copy())
      moved["student_unembed"][index] += sign * step
      values.append(ref.lean_objective(moved, **kwargs)[0]["distill/total_loss"])
    np.testing.assert_allclose((values[0] - values[1]) / (2 * step), d_unembed[index], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("divergence,param", DIVERGENCE_CASES, ids=DIVERGENCE_IDS)
def test_identical_models_give_zero_divergence(divergence, param):
  inputs = _inputs(12)
  inputs["teacher_hidden"], inputs["teacher_unembed"] = inputs["student_hidden"], inputs["student_unembed"]
  run = _lean_value_and_grads(divergence, param, inputs, softcaps=(4.0, 4.0), grad=False)
  _, (_, metrics) = run(_weights(0.5, 2.0))
  for name in ("distill/divergence_at_T", "distill/kl_div_at_T", "distill/kl_div_T1"):
    assert 0.0 <= float(metrics[name][0]) < 1e-5, (name, float(metrics[name][0]))


def test_jsd_endpoints_through_the_second_sweep_equal_the_kls():
  """JSD(0) and JSD(1) take the two-sweep skeleton; forward KL takes the single-sweep fast path: same numbers."""
  inputs = _inputs(13)
  weights = _weights(0.7, 2.0)
  for endpoint, kl in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
    (got, _), got_grads = _lean_value_and_grads("jsd", endpoint, inputs, z_loss_multiplier=Z_LOSS)(weights)
    (want, _), want_grads = _lean_value_and_grads(kl, None, inputs, z_loss_multiplier=Z_LOSS)(weights)
    np.testing.assert_allclose(float(got), float(want), rtol=VALUE_RTOL, atol=VALUE_ATOL)
    for got_grad, want_grad in zip(got_grads, want_grads):
      np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), rtol=GRAD_RTOL, atol=GRAD_ATOL)


def test_rejects_bad_divergence_and_coverage_k():
  inputs = _inputs(14)
  args = [jnp.asarray(inputs[k]) for k in ("student_hidden", "student_unembed", "teacher_hidden", "teacher_unembed")]
  args += [jnp.asarray(inputs["labels"]), jnp.asarray(inputs["mask"]), _weights(0.5, 1.0)]
  for options, message in (
      ({"divergence": "kl"}, "unknown divergence"),
      ({"divergence": "jsd", "divergence_param": 1.5}, "beta"),
      ({"divergence": "forward_kl", "divergence_param": 0.5}, "takes no parameter"),
      ({"coverage_top_k": 0}, "coverage_top_k"),
  ):
    with pytest.raises(ValueError, match=message):
      chunked_objective.distillation_terms_from_hidden(*args, **options)


# ----------------------------------------------------------------------------- Diagnostics


def test_diagnostics_match_numpy_with_ties_across_tiles():
  """Top-1 agreement, entropies and top-k coverage at T = 1 against NumPy.

  Small integers make exact ties of the maximum inside and across vocabulary tiles; they must break
  to the lowest id like ``np.argmax``. Most tokens' teacher is the student itself (agreement 1 there),
  and the teacher's column 25 (tile 2) repeats its column 3 (tile 0), while the student's is 0: where
  both models peak at 3, only the lowest-id rule agrees.
  """
  inputs = _inputs(15)
  rng = np.random.default_rng(15)
  batch, seq = MASK.shape
  student_hidden = rng.integers(-1, 2, size=(batch, seq, STUDENT_DIM)).astype(np.float32)
  student_unembed = rng.integers(-1, 2, size=(STUDENT_DIM, VOCAB)).astype(np.float32) / 2
  student_hidden[..., 0], student_unembed[0, 3] = 1.0, 2.0  # column 3 often peaks
  teacher_hidden = rng.integers(-1, 2, size=(batch, seq, TEACHER_DIM)).astype(np.float32)
  copy = rng.random((batch, seq)) < 0.6
  teacher_hidden[copy] = np.pad(student_hidden[copy], [(0, 0), (0, TEACHER_DIM - STUDENT_DIM)])
  teacher_unembed = rng.integers(-1, 2, size=(TEACHER_DIM, VOCAB)).astype(np.float32) / 2
  teacher_unembed[:STUDENT_DIM] = student_unembed
  student_unembed[:, 25] = 0.0
  teacher_unembed[:, 25] = teacher_unembed[:, 3]
  inputs.update(
      student_hidden=student_hidden,
      student_unembed=student_unembed,
      teacher_hidden=teacher_hidden,
      teacher_unembed=teacher_unembed,
  )
  student_logits, teacher_logits = student_hidden @ student_unembed, teacher_hidden @ teacher_unembed
  peak = teacher_logits.max(-1)
  cross_tile_tie = (teacher_logits[..., 3] == peak) & (teacher_logits[..., 25] == peak)
  assert (cross_tile_tie & (student_logits.argmax(-1) == 3) & MASK).sum() >= 1  # the case exercises the rule
  for top_k in (1, 5, VOCAB + 3):
    options = {"softcaps": (None, 6.0), "grad": False, "diagnostics": True, "coverage_top_k": top_k}
    _, (_, metrics) = _lean_value_and_grads("forward_kl", None, inputs, **options)(_weights(0.5, 2.0))
    sums, _, _ = ref.lean_objective(
        inputs, alpha=0.5, temperature=2.0, divergence="forward_kl", param=None, softcaps=(None, 6.0), top_k=top_k
    )
    for name in DIAGNOSTIC_NAMES:
      np.testing.assert_allclose(float(metrics[name][0]), sums[name], rtol=VALUE_RTOL, atol=VALUE_ATOL, err_msg=name)
      assert float(metrics[name][1]) == MASK.sum(), name
  assert 0.0 < sums["distill/top1_agreement"] < MASK.sum()  # neither all nor none agree
  coverage = float(metrics["distill/topk_coverage"][0])
  np.testing.assert_allclose(coverage, MASK.sum(), rtol=VALUE_RTOL, atol=VALUE_ATOL)  # k >= V keeps all the mass


def test_diagnostics_are_gradient_free_and_change_nothing_else():
  inputs = _inputs(16)
  weights = _weights(0.6, 2.0)
  for divergence, param in (("forward_kl", None), ("jsd", 0.5)):
    (total, (_, metrics)), grads = _lean_value_and_grads(divergence, param, inputs, z_loss_multiplier=Z_LOSS)(weights)
    (total_d, (_, metrics_d)), grads_d = _lean_value_and_grads(
        divergence, param, inputs, z_loss_multiplier=Z_LOSS, diagnostics=True, coverage_top_k=4
    )(weights)
    assert set(metrics_d) == set(metrics) | set(DIAGNOSTIC_NAMES)
    assert float(total_d) == float(total)
    for name in metrics:
      assert float(metrics_d[name][0]) == float(metrics[name][0]), name
    for got, want in zip(grads_d, grads):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ----------------------------------------------------------------------------- Compiled memory of every divergence

DIV_MEMORY_B, DIV_MEMORY_S, DIV_MEMORY_D, DIV_MEMORY_V = 2, 256, 32, 32768


def _dense_divergence_objective_sum(divergence, param):
  """The dense reference program: ``alpha T^2 D + (1 - alpha) CE`` on full ``[B, S, V]`` logits."""
  entry = divergences.lookup(divergence)

  def objective_sum(student_hidden, student_unembed, teacher_hidden, teacher_unembed, labels, mask, weights):
    temperature = weights.temperature
    student_logits = student_hidden @ student_unembed
    teacher_logits = jax.lax.stop_gradient(teacher_hidden @ teacher_unembed)
    soft = entry(
        jax.nn.log_softmax(teacher_logits / temperature), jax.nn.log_softmax(student_logits / temperature), param=param
    )
    ce = -jnp.take_along_axis(jax.nn.log_softmax(student_logits), labels[..., None], axis=-1)[..., 0]
    per_token = weights.alpha * jnp.square(temperature) * soft + (1.0 - weights.alpha) * ce
    return jnp.sum(jnp.where(mask, per_token, 0.0))

  return objective_sum


@pytest.mark.parametrize("divergence,param", DIVERGENCE_CASES[:2] + DIVERGENCE_CASES[3:4] + DIVERGENCE_CASES[5:])
def test_compiled_temp_memory_of_every_divergence_is_a_fraction_of_dense(divergence, param):
  shapes = (DIV_MEMORY_B, DIV_MEMORY_S, DIV_MEMORY_D, DIV_MEMORY_V)

  def lean_objective_sum(*args):
    return chunked_objective.distillation_terms_from_hidden(
        *args, seq_chunk=64, vocab_chunk=2048, divergence=divergence, divergence_param=param, diagnostics=True
    )[0]

  dense = _compiled_value_and_grad(_dense_divergence_objective_sum(divergence, param), shapes)
  lean = _compiled_value_and_grad(lean_objective_sum, shapes)
  dense_bytes = dense.memory_analysis().temp_size_in_bytes
  lean_bytes = lean.memory_analysis().temp_size_in_bytes
  print(
      f"\n{divergence}({param}) [B, S, D, V]={list(shapes)} temp_size_in_bytes: dense={dense_bytes / 2**20:.1f} MiB,"
      f" lean={lean_bytes / 2**20:.1f} MiB, ratio={lean_bytes / dense_bytes:.3f}"
  )
  assert lean_bytes <= 0.25 * dense_bytes, (lean_bytes, dense_bytes)
  batch, seq, _, vocab = shapes
  assert f"f32[{batch},{seq},{vocab}]" in dense.as_text()
  lean_text = lean.as_text()
  assert f"[{batch},{seq},{vocab}]" not in lean_text and f"[{batch * seq},{vocab}]" not in lean_text
