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


"""The teacher kinds: what the compiled step asks of a teacher, and the two single-teacher kinds.

A teacher is static (hashable: it is closed over by the jitted step); its parameters, if any, travel as the step's
``teacher_state`` argument. :meth:`Teacher.head` is the teacher's whole contribution to a step: the head the loss
takes (:mod:`loss.paths` picks the path from its type) and, for a teacher that scores examples apart, nothing else.
"""

import dataclasses
import typing

from flax import nnx
import jax

from maxtext_distill_plugin.configuration.settings import DistillSettings
from maxtext_distill_plugin.loss import heads
from maxtext_distill_plugin.model import forward as model_forward


class Teacher(typing.Protocol):
  """What the step needs of a teacher."""

  def head(self, state, batch: dict, *, lean: bool) -> heads.TeacherHead:
    """The teacher's head on ``batch``: against full student logits (``lean`` False) or hidden states (True)."""


@dataclasses.dataclass(frozen=True)
class FrozenModel:
  """An online teacher: a MaxText model run in inference mode; no gradient flows into it.

  ``settings`` selects the teacher's feature layers (``distill_teacher_layer_indices``) when the feature loss is on.
  """

  graphdef: typing.Any
  settings: DistillSettings

  def head(self, state, batch: dict, *, lean: bool) -> heads.TeacherLogits | heads.TeacherHidden:
    model = nnx.merge(self.graphdef, jax.lax.stop_gradient(state))
    options = {"settings": self.settings, "enable_dropout": False, "teacher": True}
    if not lean:
      logits, values = model_forward.forward_sown(model, batch, **options)
      found = heads.TeacherLogits(logits, values.features_LxBxSxD, values.moe_lb_loss)
    else:
      (hidden, unembed, softcap), values = model_forward.forward_hidden(model, batch, **options)
      found = heads.TeacherHidden(hidden, unembed, values.features_LxBxSxD, values.moe_lb_loss, softcap=softcap)
    return jax.lax.stop_gradient(found)


@dataclasses.dataclass(frozen=True)
class CachedTeacher:
  """The offline teacher: its top-k read from the cache with each batch (no model, no state); the lean path gathers
  the student's logits at the cached ids tile by tile, so ``lean`` changes nothing here."""

  tail: str  # "bucket" or "renormalize": how the sparse KL treats the mass outside the top-k
  field_suffix: str = ""  # several caches in one batch: this teacher's fields end with it (sources.caches)

  def head(self, state, batch: dict, *, lean: bool) -> heads.CachedTopK:
    del state, lean
    suffix = self.field_suffix
    return heads.CachedTopK(
        topk_ids_BxSxK=batch["teacher_topk_ids" + suffix],
        topk_logprobs_BxSxK=batch["teacher_topk_logprobs" + suffix],
        tail_logmass_BxS=batch["teacher_tail_logmass" + suffix],
        tail_renyi_BxSxR=batch.get("teacher_tail_renyi" + suffix),  # absent from format-1 and upstream caches
        tail=self.tail,
    )
