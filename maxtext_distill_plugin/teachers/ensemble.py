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


"""Several online teachers in one run, each a frozen MaxText model with its own weights (``teachers:`` in the YAML).

``distill_teacher_mixture`` says how they meet the student:

* ``distribution``: one teacher, the per-token mixture ``p = sum_i w_i p_i`` (:class:`heads.TeacherMixture`);
* ``loss``: ``sum_i w_i L_i``, each teacher's own loss weighted (:class:`heads.TeacherSet`);
* ``route``: each token scored by the teacher its example names (the batch's route column, an index into
  ``teachers:``), MOPD-style. Every teacher runs its forward on the whole batch and the losses are masked, so a step
  costs the forwards of all the teachers whatever the routing (a gather of each teacher's rows would need shapes that
  change from batch to batch).

The step's ``teacher_state`` is the tuple of the teachers' states, in ``teachers:`` order.
"""

import dataclasses

import jax.numpy as jnp

from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.teachers import kinds

MIXTURES = ("distribution", "loss", "route")


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """The teachers of one run, their names and weights (static), and how they are combined."""

  members: tuple[kinds.FrozenModel, ...]
  names: tuple[str, ...]
  weights: tuple[float, ...]
  mixture: str = "distribution"
  route_column: str = "teacher_id"

  def head(self, state, batch: dict, *, lean: bool) -> heads.TeacherMixture | heads.TeacherSet:
    found = tuple(member.head(member_state, batch, lean=lean) for member, member_state in zip(self.members, state))
    if self.mixture == "distribution":
      return heads.TeacherMixture(found, self.weights)
    route = None
    if self.mixture == "route":
      route = jnp.asarray(batch[self.route_column], jnp.int32)
      if route.ndim == 1:  # one teacher per row: every token of the row
        route = jnp.broadcast_to(route[:, None], batch["targets"].shape)
    return heads.TeacherSet(found, self.names, self.weights, route)
