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

"""Everything a MaxText model sows in one forward, taken off the model and reduced as MaxText's pre-training does.

After a forward, the model holds its ``nnx.Intermediate`` values; they must be
popped (the step's state must not carry them). The plugin reads three:

* ``out_projection_activations`` of the decoder layers (the feature loss; :mod:`features`);
* ``moe_lb_loss`` of every MoE layer, already times ``load_balance_loss_weight``:
  reduced as MaxText's ``loss_fn`` does, the mean over all sown values (decoder and
  MTP layers), or their sum under Megatron's sequence aux loss;
* the MTP block's ``mtp_losses`` (``mtp_num_layers > 0``): MaxText's
  ``calculate_mtp_loss``, i.e. ``sum(losses) / sum(weights) * mtp_loss_scaling_factor``.

Every other sown value is named once in the log (per model role and name), so
nothing is dropped silently.
"""

import typing

from absl import logging
from flax import nnx
import jax.numpy as jnp

from maxtext_distill_plugin.model import features

LB_NAME = "moe_lb_loss"
_reported: set[tuple[str, str]] = set()


class Sown(typing.NamedTuple):
  """What one forward sowed, reduced.

  Attributes:
    features_LxBxSxD: every decoder layer's attention output in depth order, or None.
    moe_lb_loss: scalar load-balance loss (weighted), or None when the model has no experts.
    mtp_loss: scalar multi-token-prediction loss (scaled), or None when ``mtp_num_layers == 0``.
  """

  features_LxBxSxD: jnp.ndarray | None
  moe_lb_loss: jnp.ndarray | None
  mtp_loss: jnp.ndarray | None


def moe_lb_loss(intermediates: dict, config) -> jnp.ndarray | None:
  """MaxText's load-balance term from a pure dict of sown values; None without experts, 0 when none was sown."""
  from maxtext.layers import moe  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  if config.num_experts <= 1:
    return None
  values = maxtext_utils.collect_intermediates_by_suffix(intermediates, LB_NAME)
  if not values:
    return jnp.zeros((), jnp.float32)
  flat = jnp.concatenate(values).astype(jnp.float32)
  return jnp.sum(flat) if moe.uses_megatron_seq_aux_loss(config) else jnp.mean(flat)


def _report_unused(role: str, flat: list, is_used) -> None:
  """Logs each sown name the plugin does not read, once per process and role."""
  for path, _ in flat:
    keys = tuple(str(k) for k in path)
    if is_used(keys) or (role, keys[-1]) in _reported:
      continue
    _reported.add((role, keys[-1]))
    logging.info(
        "maxtext-distill: the %s sows %s (e.g. at %s); the plugin does not use it.", role, keys[-1], "/".join(keys)
    )


def pop_sown(model: nnx.Module, *, role: str, want_features: bool) -> Sown:
  """Pops every ``nnx.Intermediate`` of ``model`` after a forward and reduces what the objective reads.

  Args:
    model: a MaxText NNX ``Transformer`` right after its forward.
    role: ``"student"`` or ``"teacher"`` (the log names it; only the student's MTP loss is read).
    want_features: whether the feature loss reads the activations.
  """
  cfg = model.config

  def is_used(keys: tuple) -> bool:
    if keys[-1] == LB_NAME:
      return cfg.num_experts > 1
    # An MTP block's attention sows too, but its layers are not decoder layers.
    return want_features and keys[0] == "decoder" and features.SOW_NAME in keys

  mtp_pure = None
  if getattr(cfg, "mtp_num_layers", 0) > 0:
    from maxtext.layers import multi_token_prediction as mtp  # pylint: disable=import-outside-toplevel

    # Subclasses of Intermediate: popped first, as MaxText does, so the generic pop below does not take them.
    mtp_state, acceptance_state = nnx.pop(model, mtp.mtp_losses), nnx.pop(model, mtp.mtp_acceptance)
    _report_unused(role, list(nnx.to_flat_state(acceptance_state)), lambda keys: False)
    if role == "student":
      mtp_pure = nnx.to_pure_dict(mtp_state)
    else:
      _report_unused(role, list(nnx.to_flat_state(mtp_state)), lambda keys: False)
  state = nnx.pop(model, nnx.Intermediate)
  flat = [(path, leaf.get_value() if hasattr(leaf, "get_value") else leaf) for path, leaf in nnx.to_flat_state(state)]
  _report_unused(role, flat, is_used)
  feats = features.out_projection_layers(flat) if want_features else None
  mtp_loss = None
  if mtp_pure is not None:
    from maxtext.layers import multi_token_prediction as mtp  # pylint: disable=import-outside-toplevel

    mtp_loss = jnp.asarray(mtp.calculate_mtp_loss({"mtp_losses": mtp_pure}, cfg), jnp.float32)
  return Sown(feats, moe_lb_loss(nnx.to_pure_dict(state), cfg), mtp_loss)
