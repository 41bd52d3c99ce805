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


"""Several teachers in one run: frozen MaxText models with their own weights, or caches (``teachers:`` in the YAML).

``distill_teacher_mixture`` says how they meet the student:

* ``distribution``: one teacher, the per-token mixture ``p = sum_i w_i p_i`` (:class:`heads.TeacherMixture`);
* ``loss``: ``sum_i w_i L_i``, each teacher's own loss weighted (:class:`heads.TeacherSet`);
* ``route``: each example scored by the teacher its data row names (MOPD). The batch arrives in static row blocks
  (:mod:`training.sources.routed`): on each device, ``route_rows[i]`` rows of teacher ``i``. So teacher ``i`` runs its
  forward on its own rows only (a reshape and a slice, local to each data-parallel shard) and a step costs the
  forwards of one batch, whatever the number of teachers. A teacher with no rows in the data runs nothing.

With ``distribution`` and ``loss`` every teacher runs on the whole batch: a step costs the forwards of all of them.
Offline, the members are :class:`kinds.CachedTeacher` (one cache each, ``loss`` only) and there is no forward.
The step's ``teacher_state`` is the tuple of the teachers' states, in ``teachers:`` order.
"""

import dataclasses

import jax

from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.teachers import kinds

MIXTURES = ("distribution", "loss", "route")


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """The teachers of one run, their names and weights (static), and how they are combined.

  ``route_rows``: with ``mixture="route"``, the rows of each teacher in every device's block of the micro-batch.
  """

  members: tuple[kinds.Teacher, ...]
  names: tuple[str, ...]
  weights: tuple[float, ...]
  mixture: str = "distribution"
  route_rows: tuple[int, ...] = ()

  def head(self, state, batch: dict, *, lean: bool) -> heads.TeacherMixture | heads.TeacherSet:
    if self.mixture == "route":
      return self.routed_head(state, batch, lean=lean)
    state = (None,) * len(self.members) if state is None else state  # cached teachers have no state
    found = tuple(member.head(member_state, batch, lean=lean) for member, member_state in zip(self.members, state))
    if self.mixture == "distribution":
      return heads.TeacherMixture(found, self.weights)
    return heads.TeacherSet(found, self.names, self.weights)

  def routed_head(self, state, batch: dict, *, lean: bool) -> heads.TeacherSet:
    """Each teacher with rows on its own rows of ``batch`` only; scored against the student's same rows."""
    if len(self.route_rows) != len(self.members):
      raise ValueError(f"route_rows {self.route_rows} does not give the rows of each of the teachers {self.names}")
    state = (None,) * len(self.members) if state is None else state
    present = tuple(i for i, rows in enumerate(self.route_rows) if rows)
    blocks = heads.RowBlocks(tuple(self.route_rows[i] for i in present))
    found = tuple(
        self.members[i].head(state[i], jax.tree.map(lambda x, b=b: blocks.take(x, b), batch), lean=lean)
        for b, i in enumerate(present)
    )
    names = tuple(self.names[i] for i in present)
    return heads.TeacherSet(found, names, tuple(1.0 for _ in present), blocks=blocks)
