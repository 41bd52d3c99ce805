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

"""Depth order of sown features across layer groups, the per-batch terms' weighting, and the z-loss on every path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import aux_terms, chunked_objective, chunked_sparse, objective
from maxtext_distill_plugin.model import features

B, S, D = 2, 3, 4
SOW = features.SOW_NAME


def _layers(depths, stacked=True):
  """Activations whose every entry is the layer's depth: ``[len(depths), B, S, D]`` (or ``[B, S, D]``)."""
  values = np.stack([np.full((B, S, D), float(d)) for d in depths])
  return (jnp.asarray(values if stacked else values[0], jnp.float32),)  # a sow stores a tuple


def _depths(flat):
  return [int(x) for x in np.asarray(features.out_projection_layers(flat))[:, 0, 0, 0]]


def test_one_scanned_stack_keeps_its_order():
  flat = [(("decoder", "layers", "self_attention", SOW), _layers([0, 1, 2]))]
  assert _depths(flat) == [0, 1, 2]


def test_scanned_cycles_interleave_their_sub_layers():
  # gpt-oss: 2 cycles of a 2-layer pattern; sub-layer i of cycle c is layer 2c + i.
  flat = [
      (("decoder", "layers", "layers_1", "GptOssAttention", SOW), _layers([1, 3])),
      (("decoder", "layers", "layers_0", "GptOssAttention", SOW), _layers([0, 2])),
  ]
  assert _depths(flat) == [0, 1, 2, 3]


def test_sub_layers_sort_by_number_and_the_remainder_comes_last():
  # 2 cycles of 12 sub-layers (layers_10 must follow layers_9), then a 2-layer unscanned remainder.
  flat = [(("decoder", "layers", f"layers_{i}", "self_attention", SOW), _layers([i, 12 + i])) for i in range(12)]
  flat.reverse()
  flat += [
      (("decoder", "layers_remainder", f"layers_{i}", "self_attention", SOW), _layers([24 + i], stacked=False))
      for i in (1, 0)
  ]
  assert _depths(flat) == list(range(26))


def test_deepseek_dense_group_precedes_the_moe_group_and_mtp_is_not_a_decoder_layer():
  flat = [
      (("mtp_block", "layers", "self_attention", SOW), _layers([99])),
      (("decoder", "moe_layers", "self_attention", SOW), _layers([1, 2, 3])),
      (("decoder", "dense_layers", "self_attention", SOW), _layers([0])),
  ]
  assert _depths(flat) == [0, 1, 2, 3]


def test_engram_chunks_follow_their_first_layer_number():
  flat = [
      (("decoder", "moe_layers_engram_4", "self_attention", SOW), _layers([4], stacked=False)),
      (("decoder", "moe_layers_2_3", "self_attention", SOW), _layers([2, 3])),
      (("decoder", "dense_layers_1_1", "self_attention", SOW), _layers([1])),
      (("decoder", "dense_layers_engram_0", "self_attention", SOW), _layers([0], stacked=False)),
  ]
  assert _depths(flat) == [0, 1, 2, 3, 4]


def test_nothing_sown_is_none():
  assert features.out_projection_layers([(("decoder", "layers", "mlp", "moe_lb_loss"), _layers([0]))]) is None


def test_per_batch_terms_are_weighted_by_token_share():
  """sum_i (sum_tokens_i + n_i a_i) / N: one micro-batch gives MaxText's mean + a; several, its manual accumulation."""
  sums, counts = [3.0, 5.0], [4.0, 6.0]
  lbs, mtps, teacher_lbs = [0.2, 0.4], [1.5, 0.5], [0.7, 0.9]
  total, n, metrics = 0.0, 0.0, None
  for s, c, lb, mtp, tlb in zip(sums, counts, lbs, mtps, teacher_lbs):
    base = {"distill/total_loss": (jnp.float32(s), jnp.float32(c))}
    t, k, m = aux_terms.add_aux_terms(
        jnp.float32(s), jnp.float32(c), base, moe_lb_loss=lb, mtp_loss=mtp, teacher_moe_lb_loss=tlb
    )
    total, n = total + float(t), n + float(k)
    metrics = m if metrics is None else jax.tree.map(lambda a, b: a + b, metrics, m)
  expected = sum(s + c * (lb + mtp) for s, c, lb, mtp in zip(sums, counts, lbs, mtps)) / sum(counts)
  np.testing.assert_allclose(total / n, expected, rtol=1e-6)
  for name, values in ((aux_terms.MOE_LB, lbs), (aux_terms.MTP, mtps), (aux_terms.TEACHER_MOE_LB, teacher_lbs)):
    value, count = metrics[name]
    np.testing.assert_allclose(float(value) / float(count), np.dot(values, counts) / sum(counts), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["distill/total_loss"][0]) / n, expected, rtol=1e-6)


def test_only_the_students_terms_get_gradients():
  def objective_of(lb, teacher_lb):
    total, _, _ = aux_terms.add_aux_terms(
        jnp.float32(1.0), jnp.float32(5.0), {}, moe_lb_loss=lb, teacher_moe_lb_loss=teacher_lb
    )
    return total

  d_lb, d_teacher = jax.grad(objective_of, argnums=(0, 1))(jnp.float32(0.1), jnp.float32(0.3))
  assert float(d_lb) == 5.0 and float(d_teacher) == 0.0


def _problem(vocab=11):
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(B, S, D)), jnp.float32)
  unembed = jnp.asarray(rng.normal(size=(D, vocab)), jnp.float32)
  teacher_hidden = jnp.asarray(rng.normal(size=(B, S, D)), jnp.float32)
  teacher_unembed = jnp.asarray(rng.normal(size=(D, vocab)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, vocab, (B, S)), jnp.int32)
  mask = jnp.asarray([[1, 1, 1], [1, 1, 0]], bool)
  return hidden, unembed, teacher_hidden, teacher_unembed, labels, mask


def _numpy_z_loss(hidden, unembed, mask, z):
  logits = np.asarray(hidden, np.float64) @ np.asarray(unembed, np.float64)
  peak = logits.max(-1, keepdims=True)
  lse = (peak + np.log(np.exp(logits - peak).sum(-1, keepdims=True)))[..., 0]
  m = np.asarray(mask)
  return np.sum(z * lse**2 * m) / m.sum()


@pytest.mark.parametrize("path", ["dense", "chunked", "chunked_offline"])
def test_z_loss_value_against_numpy_and_gradient_against_the_dense_path(path):
  z = 0.01
  hidden, unembed, teacher_hidden, teacher_unembed, labels, mask = _problem()
  weights = objective.LossWeights(alpha=jnp.float32(0.3), temperature=jnp.float32(2.0), beta=jnp.float32(0.0))
  teacher_logits = jnp.einsum("bsd,dv->bsv", teacher_hidden, teacher_unembed)
  top_ids = jnp.argsort(-teacher_logits, axis=-1)[..., :4].astype(jnp.int32)
  logp = jax.nn.log_softmax(teacher_logits, axis=-1)
  top_logp = jnp.take_along_axis(logp, top_ids, axis=-1)
  cached = heads.CachedTopK(
      topk_ids_BxSxK=top_ids,
      topk_logprobs_BxSxK=top_logp,
      tail_logmass_BxS=jnp.log1p(-jnp.minimum(jnp.sum(jnp.exp(top_logp), -1), 1 - 1e-6)),
  )

  def dense(h, w, multiplier, offline):
    teacher = cached if offline else heads.TeacherLogits(logits_BxSxV=teacher_logits)
    logits = jnp.einsum("bsd,dv->bsv", h, w)
    return objective.distillation_terms(logits, teacher, labels, mask, weights, z_loss_multiplier=multiplier)

  def lean(h, w, multiplier):
    if path == "chunked_offline":
      return chunked_sparse.offline_distillation_terms_from_hidden(
          h, w, cached, labels, mask, weights, seq_chunk=2, vocab_chunk=4, z_loss_multiplier=multiplier
      )
    return chunked_objective.distillation_terms_from_hidden(
        h,
        w,
        teacher_hidden,
        teacher_unembed,
        labels,
        mask,
        weights,
        seq_chunk=2,
        vocab_chunk=4,
        z_loss_multiplier=multiplier,
    )

  offline = path == "chunked_offline"
  run = (lambda h, w, m: dense(h, w, m, False)) if path == "dense" else lean
  _, _, metrics = jax.jit(run, static_argnums=2)(hidden, unembed, z)
  value, count = metrics["distill/z_loss"]
  np.testing.assert_allclose(float(value) / float(count), _numpy_z_loss(hidden, unembed, mask, z), rtol=1e-5)

  def mean_objective(fn, multiplier):
    def mean(h, w):
      total, count, _ = fn(h, w, multiplier)
      return total / count

    return mean

  reference = jax.grad(mean_objective(lambda h, w, m: dense(h, w, m, offline), z), argnums=(0, 1))(hidden, unembed)
  without = jax.grad(mean_objective(lambda h, w, m: dense(h, w, m, offline), 0.0), argnums=(0, 1))(hidden, unembed)
  got = jax.jit(jax.grad(mean_objective(run, z), argnums=(0, 1)))(hidden, unembed)
  for mine, ref, base in zip(got, reference, without):
    assert not np.allclose(np.asarray(ref), np.asarray(base))  # the z-loss moves the gradient
    np.testing.assert_allclose(np.asarray(mine), np.asarray(ref), rtol=1e-4, atol=1e-6)
