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

"""Tests for maxtext_distill_plugin.loss.chunked_sparse against objective.distillation_terms on full logits (offline)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import cached_objective
from maxtext_distill_plugin.loss import chunked_sparse
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.loss import sparse_tail
from tests.unit.lean_loss_testing import GRAD_RTOL, VALUE_ATOL, VALUE_RTOL, assert_same_objective, value_and_grads
from tests import numpy_reference as ref

# S=11 divides by neither seq chunk below; V=37 does not divide by 10 or 16.
DIM, FEATURE_DIM, LAYERS, VOCAB = 8, 8, 2, 37
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
    "distill/topk_coverage",
    "distill/divergence_at_T",
    "distill/kl_div_at_T",
    "distill/kl_div_T1",
    "distill/out_proj_feature_loss",
    "distill/total_loss",
    "distill/top1_agreement",
    "distill/teacher_entropy",
    "distill/student_entropy",
)
FEATURE_LAYER_NAMES = tuple(f"distill/out_proj_feature_loss/layer_{i}" for i in range(LAYERS))


def _inputs(seed, k, mask=MASK, vocab=VOCAB, teacher_logits=None):
  """Student hidden states and unembedding, and a teacher's exact top-k (shuffled within each token) as cached,
  with its tail's Renyi entropies (cache format 2)."""
  rng = np.random.default_rng(seed)
  batch, seq = mask.shape
  if teacher_logits is None:
    teacher_logits = 3.0 * rng.standard_normal((batch, seq, vocab))
  teacher_logp = ref.log_softmax(teacher_logits)
  ids = np.argsort(-teacher_logp, axis=-1)[..., :k]
  ids = np.take_along_axis(ids, rng.permuted(np.broadcast_to(np.arange(k), ids.shape), axis=-1), axis=-1)
  at_ids = np.take_along_axis(teacher_logp, ids, axis=-1)
  rest = teacher_logp.copy()
  np.put_along_axis(rest, ids, -np.inf, axis=-1)
  with np.errstate(divide="ignore"):
    tail = np.log(np.exp(rest).sum(-1))
  return {
      "student_hidden": rng.standard_normal((batch, seq, DIM)).astype(np.float32),
      "student_unembed": (2.0 * rng.standard_normal((DIM, vocab)) / np.sqrt(DIM)).astype(np.float32),
      "student_features": rng.standard_normal((LAYERS, batch, seq, FEATURE_DIM)).astype(np.float32),
      "teacher_features": rng.standard_normal((LAYERS, batch, seq, FEATURE_DIM)).astype(np.float32),
      "ids": ids.astype(np.int32),
      "logprobs": at_ids.astype(np.float32),
      "tail_logmass": tail.astype(np.float32),
      "tail_renyi": np.asarray(
          sparse_tail.tail_renyi_entropies(jnp.asarray(teacher_logp, jnp.float32), jnp.asarray(ids))
      ),
      "labels": rng.integers(0, vocab, size=(batch, seq)).astype(np.int32),
      "mask": mask,
  }


def _teacher(inputs, tail, with_features):
  return heads.CachedTopK(
      features_LxBxSxD=jnp.asarray(inputs["teacher_features"]) if with_features else None,
      topk_ids_BxSxK=jnp.asarray(inputs["ids"]),
      topk_logprobs_BxSxK=jnp.asarray(inputs["logprobs"]),
      tail_logmass_BxS=jnp.asarray(inputs["tail_logmass"]),
      tail_renyi_BxSxR=jnp.asarray(inputs["tail_renyi"]),
      tail=tail,
  )


def _weights(alpha, temperature, beta=0.4):
  return objective.LossWeights(alpha=jnp.float32(alpha), temperature=jnp.float32(temperature), beta=jnp.float32(beta))


def _dense(hidden, unembed, features, inputs, weights, tail, softcap, loss_type):
  """The reference: objective.distillation_terms on the full [B, S, V] logits and the cached top-k teacher."""
  logits = hidden @ unembed
  if softcap:
    logits = softcap * jnp.tanh(logits / softcap)
  return objective.distillation_terms(
      logits,
      _teacher(inputs, tail, loss_type is not None),
      jnp.asarray(inputs["labels"]),
      jnp.asarray(inputs["mask"]),
      weights,
      student_features_LxBxSxD=None if loss_type is None else features,
      feature_loss_type=loss_type or "cosine",
  )


def _lean(hidden, unembed, features, inputs, weights, tail, softcap, loss_type, vocab_chunk, seq_chunk=SEQ_CHUNK):
  return chunked_sparse.offline_distillation_terms_from_hidden(
      hidden,
      unembed,
      _teacher(inputs, tail, loss_type is not None),
      jnp.asarray(inputs["labels"]),
      jnp.asarray(inputs["mask"]),
      weights,
      student_features_LxBxSxD=None if loss_type is None else features,
      feature_loss_type=loss_type or "cosine",
      seq_chunk=seq_chunk,
      vocab_chunk=vocab_chunk,
      student_logit_softcap=softcap,
  )


def _assert_lean_matches_dense(inputs, weights, tail, softcap, vocab_chunk, loss_type=None, seq_chunk=SEQ_CHUNK):
  options = {"tail": tail, "softcap": softcap, "loss_type": loss_type}
  want = value_and_grads(functools.partial(_dense, **options), inputs, weights)
  got = value_and_grads(
      functools.partial(_lean, **options, vocab_chunk=vocab_chunk, seq_chunk=seq_chunk), inputs, weights
  )
  names = METRIC_NAMES + (FEATURE_LAYER_NAMES if loss_type else ())
  assert_same_objective(got, want, inputs["mask"], names)
  _, _, got_metrics, got_grads = got
  # Only meaningful if the compared quantities are not trivially zero.
  assert np.abs(np.asarray(got_grads[0])[inputs["mask"]]).max() > 1e-3
  assert np.abs(np.asarray(got_grads[1])).max() > 1e-3
  assert float(got_metrics["distill/kl_div_at_T"][0]) > 1e-2


@pytest.mark.parametrize("softcap", (None, 3.0), ids=("no_softcap", "softcap_3"))
@pytest.mark.parametrize("k", (5, VOCAB), ids=("k5", "k_eq_V"))
@pytest.mark.parametrize("temperature", (1.0, 2.0, 0.5))
@pytest.mark.parametrize("tail", ("bucket", "renormalize"))
def test_matches_dense_offline_objective(tail, temperature, k, softcap):
  _assert_lean_matches_dense(_inputs(0, k), _weights(0.6, temperature), tail, softcap, vocab_chunk=10)


@pytest.mark.parametrize(
    "alpha,tail,k,vocab_chunk,seq_chunk,loss_type",
    (
        (1.0, "bucket", 8, 16, 4, None),
        (0.0, "bucket", 8, None, 4, None),
        (0.3, "renormalize", 3, 37, 5, "cosine"),
        (0.5, "bucket", 36, 10, 64, "l2"),  # tail of one token; seq_chunk >= S
        (0.5, "bucket", 1, 1, 3, None),  # one column per vocabulary tile
    ),
)
def test_matches_dense_offline_objective_other_tilings(alpha, tail, k, vocab_chunk, seq_chunk, loss_type):
  _assert_lean_matches_dense(
      _inputs(1, k), _weights(alpha, 2.0), tail, None, vocab_chunk, loss_type=loss_type, seq_chunk=seq_chunk
  )


@pytest.mark.parametrize("temperature", (0.5, 2.0, 4.0))
def test_student_equal_to_teacher_is_the_minimum_in_both_paths(temperature):
  """A teacher of the student's own shape: with the tail entropies the soft loss and its gradient vanish at T != 1."""
  student = _inputs(5, 6)
  hidden, unembed = student["student_hidden"], 3.0 * student["student_unembed"]
  inputs = _inputs(5, 6, teacher_logits=hidden.astype(np.float64) @ unembed.astype(np.float64))
  inputs.update(student_hidden=hidden, student_unembed=unembed)
  weights = objective.LossWeights(jnp.float32(1.0), jnp.float32(temperature), jnp.float32(0.0))
  options = {"tail": "bucket", "softcap": None, "loss_type": None}
  for fn in (functools.partial(_dense, **options), functools.partial(_lean, **options, vocab_chunk=10)):
    total, count, metrics, grads = value_and_grads(fn, inputs, weights)
    assert abs(float(metrics["distill/soft_loss"][0]) / float(count)) < 1e-6
    assert abs(float(total)) < 1e-5 * float(count)
    assert np.abs(np.asarray(grads[0])).max() < 1e-5 and np.abs(np.asarray(grads[1])).max() < 1e-5
  uniform = dict(inputs, tail_renyi=np.full_like(inputs["tail_renyi"], np.log(VOCAB - 6)))
  _, count, metrics, _ = value_and_grads(functools.partial(_dense, **options), uniform, weights)
  assert float(metrics["distill/soft_loss"][0]) / float(count) > 1e-5  # a uniform tail (format 1): 10x the above


def test_head_stats_match_full_logits():
  """The primitive alone: each statistic, and the gradient of an arbitrary weighting of all of them."""
  inputs = _inputs(2, 6)
  hidden, unembed = jnp.asarray(inputs["student_hidden"]), jnp.asarray(inputs["student_unembed"])
  ids, labels, temperature = jnp.asarray(inputs["ids"]), jnp.asarray(inputs["labels"]), jnp.float32(0.7)
  rng = np.random.default_rng(3)
  weights = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (labels.shape,) * 3 + (ids.shape,)]

  def dense(h, w):
    return cached_objective.student_head_stats(2.5 * jnp.tanh((h @ w) / 2.5), ids, labels, temperature)

  def lean(h, w):
    return chunked_sparse.student_head_stats_from_hidden(
        h, w, ids, labels, temperature, seq_chunk=4, vocab_chunk=9, logit_softcap=2.5
    )

  def weighted(fn, h, w):
    return sum(jnp.sum(x * c) for x, c in zip(fn(h, w), weights))

  for got, want in zip(jax.jit(lean)(hidden, unembed), dense(hidden, unembed)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=VALUE_RTOL, atol=VALUE_ATOL)
  got_grads = jax.jit(jax.grad(functools.partial(weighted, lean), argnums=(0, 1)))(hidden, unembed)
  want_grads = jax.grad(functools.partial(weighted, dense), argnums=(0, 1))(hidden, unembed)
  for got, want in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=GRAD_RTOL, atol=1e-5)


def test_padding_gets_no_gradient():
  inputs = _inputs(4, 5)

  def objective_sum(hidden):
    unembed = jnp.asarray(inputs["student_unembed"])
    return _lean(hidden, unembed, None, inputs, _weights(0.5, 2.0), "bucket", None, None, 10)[0]

  d_hidden = jax.grad(objective_sum)(jnp.asarray(inputs["student_hidden"]))
  assert np.all(np.asarray(d_hidden)[~MASK] == 0.0)
  assert np.all(np.abs(np.asarray(d_hidden)[MASK]).max(axis=-1) > 0.0)


def test_bfloat16_inputs_keep_their_dtype_and_stay_close():
  inputs = _inputs(5, 5)
  weights = _weights(0.5, 2.0)
  bf16 = [jnp.asarray(inputs[k], jnp.bfloat16) for k in ("student_hidden", "student_unembed")]
  lean = functools.partial(_lean, inputs=inputs, weights=weights, tail="bucket", softcap=None, loss_type=None)
  total = lean(*bf16, None, vocab_chunk=10)[0]
  grads = jax.grad(lambda h, w: lean(h, w, None, vocab_chunk=10)[0], argnums=(0, 1))(*bf16)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  want = _dense(*(x.astype(jnp.float32) for x in bf16), None, inputs, weights, "bucket", None, None)[0]
  np.testing.assert_allclose(float(total), float(want), rtol=1e-4)


def test_rejects_mismatched_shapes_and_online_teachers():
  inputs = _inputs(6, 5)
  hidden, unembed = jnp.asarray(inputs["student_hidden"]), jnp.asarray(inputs["student_unembed"])
  labels, mask, weights = jnp.asarray(inputs["labels"]), jnp.asarray(inputs["mask"]), _weights(0.5, 1.0)
  teacher = _teacher(inputs, "bucket", False)
  lean = chunked_sparse.offline_distillation_terms_from_hidden
  with pytest.raises(ValueError, match="share"):
    lean(hidden[:, :-1], unembed, teacher, labels[:, :-1], mask[:, :-1], weights)
  with pytest.raises(ValueError, match="hidden"):
    lean(hidden, unembed[:-1], teacher, labels, mask, weights)
  with pytest.raises(ValueError, match="exceeds"):
    lean(hidden, unembed[:, :4], teacher, labels, mask, weights)
  with pytest.raises(ValueError, match="positive"):
    lean(hidden, unembed, teacher, labels, mask, weights, vocab_chunk=0)
  with pytest.raises(ValueError, match="cached top-k"):
    lean(hidden, unembed, heads.TeacherLogits(logits_BxSxV=hidden @ unembed), labels, mask, weights)


# ----------------------------------------------------------------------------- Compiled memory, not timing

MEMORY_B, MEMORY_S, MEMORY_D, MEMORY_V, MEMORY_K = 2, 256, 64, 8192, 64


def _compiled_value_and_grad(loss_fn):
  """The compiled jit(value_and_grad) of an offline objective_sum w.r.t. hidden states and unembedding."""
  hidden = jax.ShapeDtypeStruct((MEMORY_B, MEMORY_S, MEMORY_D), jnp.float32)
  unembed = jax.ShapeDtypeStruct((MEMORY_D, MEMORY_V), jnp.float32)
  ids = jax.ShapeDtypeStruct((MEMORY_B, MEMORY_S, MEMORY_K), jnp.int32)
  logprobs = jax.ShapeDtypeStruct((MEMORY_B, MEMORY_S, MEMORY_K), jnp.float32)
  tail = jax.ShapeDtypeStruct((MEMORY_B, MEMORY_S), jnp.float32)
  labels = jax.ShapeDtypeStruct((MEMORY_B, MEMORY_S), jnp.int32)
  mask = jax.ShapeDtypeStruct((MEMORY_B, MEMORY_S), jnp.bool_)
  return (
      jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
      .lower(hidden, unembed, ids, logprobs, tail, labels, mask)
      .compile()
  )


def _cached(ids, logprobs, tail):
  return heads.CachedTopK(topk_ids_BxSxK=ids, topk_logprobs_BxSxK=logprobs, tail_logmass_BxS=tail)


@pytest.mark.parametrize("seq_chunk,vocab_chunk", ((32, None), (64, 1024)))
def test_compiled_temp_memory_is_a_fraction_of_dense(seq_chunk, vocab_chunk):
  weights = _weights(0.5, 2.0)

  def dense_objective_sum(hidden, unembed, ids, logprobs, tail, labels, mask):
    return objective.distillation_terms(hidden @ unembed, _cached(ids, logprobs, tail), labels, mask, weights)[0]

  def lean_objective_sum(hidden, unembed, ids, logprobs, tail, labels, mask):
    return chunked_sparse.offline_distillation_terms_from_hidden(
        hidden, unembed, _cached(ids, logprobs, tail), labels, mask, weights, seq_chunk=seq_chunk, vocab_chunk=vocab_chunk
    )[0]

  dense = _compiled_value_and_grad(dense_objective_sum)
  lean = _compiled_value_and_grad(lean_objective_sum)
  dense_bytes = dense.memory_analysis().temp_size_in_bytes
  lean_bytes = lean.memory_analysis().temp_size_in_bytes
  print(
      f"\n[B={MEMORY_B}, S={MEMORY_S}, D={MEMORY_D}, V={MEMORY_V}, k={MEMORY_K}] temp_size_in_bytes:"
      f" dense={dense_bytes} ({dense_bytes / 2**20:.1f} MiB), chunked(seq_chunk={seq_chunk},"
      f" vocab_chunk={vocab_chunk})={lean_bytes} ({lean_bytes / 2**20:.1f} MiB), ratio={lean_bytes / dense_bytes:.3f}"
  )
  assert lean_bytes < 0.25 * dense_bytes, (lean_bytes, dense_bytes)
  # Structural check as well: no [B, S, V] array anywhere in the compiled lean program.
  assert f"f32[{MEMORY_B},{MEMORY_S},{MEMORY_V}]" in dense.as_text()
  lean_text = lean.as_text()
  assert f"[{MEMORY_B},{MEMORY_S},{MEMORY_V}]" not in lean_text
  assert f"[{MEMORY_B * MEMORY_S},{MEMORY_V}]" not in lean_text
