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

"""The student's MaxText training terms against MaxText's own pre-training loss, on a tiny DeepSeek-V3.

One model has all of them: MLA attention, a dense and an MoE layer group, the
MoE load balance, a multi-token-prediction layer and the z-loss. With
``alpha = 0`` and ``beta = 0`` the plugin's objective is MaxText's pre-training
objective, so its value and its gradients must equal those of MaxText's
``loss_fn`` (``maxtext.trainers.pre_train.train``) for the same parameters and
batch, on the dense and the lean (chunked) loss paths.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.model import features
from maxtext_distill_plugin.model import forward as model_forward
from maxtext_distill_plugin.training import student_objective
from tests.conftest import CPU_RUN_ARGS, TINY_SHAPE_ARGS, maxtext_base_yml

RTOL = 1e-5
Z_LOSS = 1e-3  # MaxText's z_loss_multiplier
DEEPSEEK_TINY = [
    *CPU_RUN_ARGS,
    *TINY_SHAPE_ARGS,
    "model_name=deepseek3-tiny",
    "base_num_decoder_layers=3",
    "first_num_dense_layers=1",
    "qk_nope_head_dim=16",
    "qk_rope_head_dim=8",
    "v_head_dim=16",
    "num_experts=4",
    "num_experts_per_tok=2",
    "base_moe_mlp_dim=128",
    "sparse_matmul=False",
    "capacity_factor=-1",
    "load_balance_loss_weight=0.01",
    f"z_loss_multiplier={Z_LOSS}",
    "mtp_num_layers=1",
    "dataset_type=synthetic",
    "max_target_length=32",
    "per_device_batch_size=2",
    "distill_beta=1.0",
    "run_name=terms",
]


@pytest.fixture(scope="module", name="deepseek")
def _deepseek(tmp_path_factory):
  """A randomly initialised tiny DeepSeek-V3 student, its config and a padded batch."""
  from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  features.ensure_out_projection_sow()
  out = tmp_path_factory.mktemp("terms")
  cfg = pyconfig.initialize(["terms", maxtext_base_yml(), *DEEPSEEK_TINY, f"base_output_directory={out}"])
  mesh = maxtext_utils.get_mesh_from_config(cfg)
  with jax.set_mesh(mesh):
    model = model_creation_utils.from_pretrained(cfg, mesh=mesh)
  rng = np.random.default_rng(7)
  batch_size, seq = 2, cfg.max_target_length
  tokens = jnp.asarray(rng.integers(1, cfg.vocab_size, (batch_size, seq)), jnp.int32)
  segments = jnp.ones_like(tokens).at[1, seq - 6 :].set(0)
  batch = {
      "inputs": tokens,
      "inputs_position": jnp.broadcast_to(jnp.arange(seq), tokens.shape),
      "inputs_segmentation": segments,
      "targets": jnp.roll(tokens, -1, axis=1),
      "targets_segmentation": segments,
  }
  teacher_logits = jnp.asarray(rng.normal(size=(batch_size, seq, cfg.vocab_size)), jnp.float32)
  teacher_hidden = jnp.asarray(rng.normal(size=(batch_size, seq, cfg.emb_dim)), jnp.float32)
  teacher_unembed = jnp.asarray(rng.normal(size=(cfg.emb_dim, cfg.vocab_size)) / 8.0, jnp.float32)
  teachers = {
      False: heads.TeacherLogits(logits_BxSxV=teacher_logits),
      True: heads.TeacherHidden(teacher_hidden, teacher_unembed),
  }
  return cfg, mesh, model, batch, teachers


def _maxtext_loss(graphdef, params, rest, cfg, batch):
  from maxtext.trainers.pre_train import train  # pylint: disable=import-outside-toplevel

  model = nnx.merge(graphdef, params, rest, copy=True)
  loss, aux = train.loss_fn(model, cfg, dict(batch), None, None, is_train=True)
  return loss, {k: aux[k] for k in ("moe_lb_loss", "mtp_loss", "z_loss")}


def _plugin_loss(graphdef, params, rest, teacher, batch, chunked):
  hard_only = objective.LossWeights(alpha=jnp.float32(0.0), temperature=jnp.float32(1.0), beta=jnp.float32(0.0))
  model = nnx.merge(graphdef, params, rest, copy=True)
  total, count, metrics = student_objective.student_terms(
      model, teacher, batch, hard_only, DistillSettings(), chunked=chunked, enable_dropout=False
  )
  return total / count, {name: value / n for name, (value, n) in metrics.items()}


@pytest.fixture(scope="module", name="reference")
def _reference(deepseek):
  """MaxText's pre-training loss, its terms and its gradients, computed once."""
  cfg, mesh, model, batch, _ = deepseek
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  with jax.set_mesh(mesh):
    # The non-parameter state (RNG counters) enters the traced function as an argument, as in the step.
    (loss, aux), grads = jax.jit(
        jax.value_and_grad(lambda p, r: _maxtext_loss(graphdef, p, r, cfg, batch), has_aux=True)
    )(params, rest)
  return float(loss), {k: float(v) for k, v in aux.items()}, grads


@pytest.mark.parametrize("chunked", [False, True], ids=["dense", "chunked"])
def test_objective_and_gradients_equal_maxtext_pretraining(deepseek, reference, chunked):
  _, mesh, model, batch, teachers = deepseek
  theirs, aux, their_grads = reference
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  with jax.set_mesh(mesh):
    (ours, metrics), our_grads = jax.jit(
        jax.value_and_grad(lambda p, r: _plugin_loss(graphdef, p, r, teachers[chunked], batch, chunked), has_aux=True)
    )(params, rest)
  assert aux["moe_lb_loss"] > 0 and aux["mtp_loss"] > 0 and aux["z_loss"] > 0
  np.testing.assert_allclose(float(metrics["distill/moe_lb_loss"]), aux["moe_lb_loss"], rtol=RTOL)
  np.testing.assert_allclose(float(metrics["distill/mtp_loss"]), aux["mtp_loss"], rtol=RTOL)
  np.testing.assert_allclose(float(metrics["distill/z_loss"]), aux["z_loss"], rtol=RTOL)
  np.testing.assert_allclose(float(ours), theirs, rtol=RTOL)
  for (path, mine), (_, expected) in zip(nnx.to_flat_state(our_grads), nnx.to_flat_state(their_grads)):
    np.testing.assert_allclose(
        np.asarray(mine.get_value()), np.asarray(expected.get_value()), rtol=1e-4, atol=1e-7, err_msg=str(path)
    )


def test_z_loss_against_a_numpy_reference(deepseek):
  cfg, mesh, model, batch, teachers = deepseek
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def logits_and_metrics(p, r):
    logits, _ = model_forward.forward(
        nnx.merge(graphdef, p, r, copy=True), batch, settings=DistillSettings(), enable_dropout=False
    )
    return logits, _plugin_loss(graphdef, p, r, teachers[False], batch, False)[1]

  with jax.set_mesh(mesh):
    logits, metrics = jax.jit(logits_and_metrics)(params, rest)
  z = np.asarray(logits, np.float64)
  peak = z.max(-1, keepdims=True)
  lse = (peak + np.log(np.exp(z - peak).sum(-1, keepdims=True)))[..., 0]
  mask = np.asarray(batch["targets_segmentation"]) != 0
  expected = np.sum(cfg.z_loss_multiplier * lse**2 * mask) / mask.sum()
  np.testing.assert_allclose(float(metrics["distill/z_loss"]), expected, rtol=RTOL)


def test_mla_features_of_both_layer_groups_in_depth_order(deepseek):
  """Scaling one layer's attention output changes that depth's features and no shallower one's."""
  cfg, mesh, model, batch, _ = deepseek
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  settings = DistillSettings(distill_beta=1.0)
  every_layer = jax.jit(
      lambda p, r: model_forward.forward(
          nnx.merge(graphdef, p, r, copy=True), batch, settings=settings, enable_dropout=False
      )[1]
  )

  def features_of_model():
    with jax.set_mesh(mesh):
      return np.asarray(every_layer(nnx.split(model, nnx.Param, ...)[1], rest))

  base = features_of_model()
  assert base.shape == (cfg.num_decoder_layers, 2, cfg.max_target_length, cfg.emb_dim)
  # (group, layer within the group's scan axis) -> depth: dense layer 0 is depth 0, MoE layers 0, 1 are depths 1, 2.
  for group, index, depth in (("dense_layers", 0, 0), ("moe_layers", 0, 1), ("moe_layers", 1, 2)):
    kernel = getattr(model.decoder, group).self_attention.out.kernel
    original = kernel[...]
    kernel[...] = original.at[:, index].multiply(2.0)  # the scan axis of MaxText's kernels is axis 1
    changed = features_of_model()
    kernel[...] = original
    np.testing.assert_array_equal(changed[:depth], base[:depth])
    np.testing.assert_allclose(changed[depth], 2.0 * base[depth], rtol=1e-5, atol=1e-6)
