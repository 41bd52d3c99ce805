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

"""The learned feature projection (``distill_feature_projection=linear``): its initialisation, the gradient of the
projected feature loss against float64 NumPy, its keys' refusals and the save/restore of the objective's tree."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.configuration import config
from maxtext_distill_plugin.configuration import feature_checks
from maxtext_distill_plugin.loss import feature_projection
from maxtext_distill_plugin.loss import objective
from maxtext_distill_plugin.training import objective_params
from tests import numpy_reference


@pytest.mark.parametrize("d_student,d_teacher", [(8, 8), (4, 12), (12, 4)])
def test_initialisation_is_identity_or_semi_orthogonal_per_layer(d_student, d_teacher):
  kernel = np.asarray(feature_projection.init_kernel(0, 3, d_student, d_teacher), np.float64)
  assert kernel.shape == (3, d_student, d_teacher) and kernel.dtype == np.float64
  for layer in kernel:
    if d_student == d_teacher:
      np.testing.assert_array_equal(layer, np.eye(d_student))
    elif d_student < d_teacher:  # orthonormal rows: the map keeps the student's norms and angles
      np.testing.assert_allclose(layer @ layer.T, np.eye(d_student), atol=1e-5)
    else:
      np.testing.assert_allclose(layer.T @ layer, np.eye(d_teacher), atol=1e-5)
  if d_student != d_teacher:
    assert not np.allclose(kernel[0], kernel[1]), "each layer draws its own matrix"
    np.testing.assert_array_equal(kernel, feature_projection.init_kernel(0, 3, d_student, d_teacher))
    assert not np.allclose(kernel, feature_projection.init_kernel(1, 3, d_student, d_teacher))


def _reference_loss_and_grads(kernel, student, teacher, mask, beta, loss_type):
  """float64: ``beta * sum over valid tokens of mean over layers of d(s_l W_l, t_l)`` and its gradients in W, s."""
  w, s, t = (np.asarray(x, np.float64) for x in (kernel, student, teacher))
  p = np.einsum("lbsd,lde->lbse", s, w)
  layers = p.shape[0]
  distance = numpy_reference.feature_distance_per_layer(p, t, loss_type)
  total = beta * np.sum(np.mean(distance, axis=0) * mask)
  if loss_type == "l2":
    d_distance_dp = 2.0 * (p - t) / p.shape[-1]
  else:
    p_norm = np.linalg.norm(p, axis=-1, keepdims=True)
    t_norm = np.linalg.norm(t, axis=-1, keepdims=True)
    dot = np.sum(p * t, axis=-1, keepdims=True)
    d_distance_dp = -(t / (p_norm * t_norm) - dot * p / (p_norm**3 * t_norm))
  g_p = d_distance_dp * (beta * np.asarray(mask, np.float64) / layers)[None, :, :, None]
  return total, np.einsum("lbsd,lbse->lde", s, g_p), np.einsum("lbse,lde->lbsd", g_p, w)


def _projected_objective(kernel, student, teacher, mask, beta, loss_type):
  """The objective's token sum of the feature term alone, as the step computes it (projection, then combine_terms)."""
  zeros = jnp.zeros(mask.shape, jnp.float32)
  total, _, metrics = objective.combine_terms(
      zeros,
      zeros,
      zeros,
      zeros,
      mask,
      objective.LossWeights(alpha=0.5, temperature=1.0, beta=beta),
      student_features_LxBxSxD=feature_projection.project(kernel, student),
      teacher_features_LxBxSxD=teacher,
      feature_loss_type=loss_type,
  )
  return total, metrics


@pytest.mark.parametrize("loss_type", ["cosine", "l2"])
def test_projected_feature_loss_gradients_match_float64_numpy(loss_type):
  rng = np.random.default_rng(0)
  layers, batch, seq, d_student, d_teacher = 2, 2, 3, 4, 6
  kernel = rng.normal(size=(layers, d_student, d_teacher)) / 2.0
  student = rng.normal(size=(layers, batch, seq, d_student))
  teacher = rng.normal(size=(layers, batch, seq, d_teacher))
  mask = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
  beta = 0.7
  want_total, want_kernel, want_student = _reference_loss_and_grads(kernel, student, teacher, mask, beta, loss_type)
  # The analytic reference agrees with central differences of the float64 loss.
  np.testing.assert_allclose(
      want_kernel,
      numpy_reference.finite_difference(
          lambda w: _reference_loss_and_grads(w, student, teacher, mask, beta, loss_type)[0], kernel
      ),
      rtol=1e-6,
      atol=1e-8,
  )

  def total_fn(w, s):
    return _projected_objective(w, s, jnp.asarray(teacher, jnp.float32), jnp.asarray(mask, jnp.float32), beta, loss_type)

  args = (jnp.asarray(kernel, jnp.float32), jnp.asarray(student, jnp.float32))
  (total, metrics), (got_kernel, got_student) = jax.value_and_grad(total_fn, argnums=(0, 1), has_aux=True)(*args)
  np.testing.assert_allclose(float(total), want_total, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(got_kernel), want_kernel, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got_student), want_student, rtol=1e-4, atol=1e-6)
  feature_sum, feature_count = metrics["distill/out_proj_feature_loss"]
  np.testing.assert_allclose(float(feature_sum), want_total, rtol=1e-5)
  assert float(feature_count) == mask.sum()


def test_identity_projection_gives_the_unprojected_loss_exactly():
  rng = np.random.default_rng(1)
  student = jnp.asarray(rng.normal(size=(2, 2, 3, 8)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(2, 2, 3, 8)), jnp.float32)
  mask = jnp.ones((2, 3), jnp.float32)
  projected, _ = _projected_objective(feature_projection.init_kernel(0, 2, 8, 8), student, teacher, mask, 1.0, "cosine")
  zeros = jnp.zeros((2, 3), jnp.float32)
  plain, _, _ = objective.combine_terms(
      zeros,
      zeros,
      zeros,
      zeros,
      mask,
      objective.LossWeights(alpha=0.5, temperature=1.0, beta=1.0),
      student_features_LxBxSxD=student,
      teacher_features_LxBxSxD=teacher,
  )
  assert float(projected) == float(plain)


@pytest.mark.parametrize(
    "values,needle",
    [
        ({"distill_feature_projection": "mlp", "distill_beta": 1.0}, "distill_feature_projection='mlp'"),
        ({"distill_feature_projection": "linear"}, "distill_beta=0.0"),
    ],
)
def test_bad_projection_settings_name_key_value_and_fix(values, needle):
  with pytest.raises(ValueError) as error:
    config.settings_from(**values)
  assert needle in str(error.value) and "Fix:" in str(error.value) and "distill_feature_projection" in str(error.value)


def _model_config(width: int, opt_type: str = "adamw"):
  return types.SimpleNamespace(
      scan_layers=True, decoder_block="llama2", num_decoder_layers=2, emb_dim=width, opt_type=opt_type
  )


def test_unequal_widths_need_the_linear_projection_and_a_model_free_optimizer():
  none = config.settings_from(distill_beta=1.0)
  linear = config.settings_from(distill_beta=1.0, distill_feature_projection="linear")
  with pytest.raises(errors.ConfigError) as refusal:
    feature_checks.check(none, _model_config(64), _model_config(128))
  assert refusal.value.key == "emb_dim" and "distill_feature_projection=linear" in refusal.value.fix
  feature_checks.check(linear, _model_config(64), _model_config(128))
  feature_checks.check(none, _model_config(64), _model_config(64))
  with pytest.raises(errors.ConfigError) as refusal:
    feature_checks.check(linear, _model_config(64, "muon"), _model_config(128))
  assert refusal.value.key == "opt_type" and "distill_feature_projection=none" in refusal.value.fix


def test_objective_tree_saves_and_restores_exactly(tmp_path):
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  tx = optax.adamw(1e-2)
  params = feature_projection.init_params(0, 2, 4, 6)
  saved = objective_params.ObjectiveParams({"params": params, "opt_state": tx.init(params)}, tx, str(tmp_path), mesh)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, opt_state = tx.update(grads, saved.tree["opt_state"], params)  # a non-trivial optimizer state
  saved.tree = {"params": optax.apply_updates(params, updates), "opt_state": opt_state}
  manager = types.SimpleNamespace(checkpoints=[types.SimpleNamespace(step=3)])
  saved.save(manager, 3)
  fresh = feature_projection.init_params(0, 2, 4, 6)
  loaded = objective_params.ObjectiveParams({"params": fresh, "opt_state": tx.init(fresh)}, tx, str(tmp_path), mesh)
  loaded.restore(3)
  assert jax.tree.structure(loaded.tree) == jax.tree.structure(saved.tree)
  for got, want in zip(jax.tree.leaves(loaded.tree), jax.tree.leaves(saved.tree)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  with pytest.raises(ValueError) as missing:
    loaded.restore(7)
  assert "distill_feature_projection=linear" in str(missing.value) and "Fix:" in str(missing.value)
  # A later checkpoint: MaxText has dropped step 3, so the objective's step 3 goes too.
  saved.save(types.SimpleNamespace(checkpoints=[types.SimpleNamespace(step=5)]), 5)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["5"]


def test_a_projection_run_resumed_without_the_projection_is_refused(tmp_path):
  student = types.SimpleNamespace(base_output_directory=str(tmp_path), run_name="r")
  configs = types.SimpleNamespace(settings=config.settings_from(), student=student)
  assert isinstance(objective_params.start(configs, None, None, 3), objective_params.NoObjectiveParams)
  (tmp_path / "r" / objective_params.OBJECTIVE_DIR / "2").mkdir(parents=True)
  assert isinstance(objective_params.start(configs, None, None, 0), objective_params.NoObjectiveParams)  # a new start
  with pytest.raises(ValueError) as refusal:
    objective_params.start(configs, None, None, 3)
  assert "distill_feature_projection=none" in str(refusal.value) and "Fix:" in str(refusal.value)
