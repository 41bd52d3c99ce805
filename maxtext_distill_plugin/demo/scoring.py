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

"""Held-out scoring shared by the demo and the pruning-recovery study (``tools/study_pruning_recovery.py``).

Every model is scored on the same host-side batches: the first batches of
MaxText's eval iterator over the held-out split, collected once. A model is
loaded as MaxText loads ``load_parameters_path`` and run by the trainer's own
forward pass (no dropout), so its score is comparable with the trainer's evals.

* :func:`held_out_cross_entropy`: token-mean next-token CE (the demo's table).
* :class:`HeldOut`: CE, KL(teacher || model) at T = 1 and teacher-model top-1
  agreement, against the teacher's log-probabilities stored once (the study).
* :func:`unigram_cross_entropy`: the floor any language model must beat.
"""

import contextlib
import functools
import math

import numpy as np

from maxtext_distill_plugin.demo import records


def collect_eval_batches(cfg, count: int) -> list[dict]:
  """The first ``count`` batches of MaxText's eval iterator over the held-out split, on the host."""
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline import grain_data_processing  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  mesh = maxtext_utils.get_mesh_from_config(cfg)
  iterator = grain_data_processing.make_grain_eval_iterator(cfg, mesh, [jax.process_index()])
  batches = []
  for batch in iterator:
    batches.append(jax.device_get(batch))
    if len(batches) == count:
      break
  if len(batches) < count:
    raise ValueError(f"the held-out split gave {len(batches)} batches, fewer than the {count} asked for.")
  return batches


def target_count(batches: list[dict]) -> int:
  """How many valid targets ``batches`` hold (the denominator of every token-mean score)."""
  return int(sum(int((np.asarray(b["targets_segmentation"]) != 0).sum()) for b in batches))


@contextlib.contextmanager
def loaded(cfg):
  """``(graphdef, state)`` of the model ``cfg.load_parameters_path``, inside its mesh and sharding rules."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel

  mesh = maxtext_utils.get_mesh_from_config(cfg)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(cfg.logical_axis_rules):
    yield nnx.split(model_creation_utils.from_pretrained(cfg, mesh=mesh))


def forward_logits(graphdef, state, batch):
  """``[B, S, V]`` logits of the model, by the trainer's own forward pass without dropout."""
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.configuration.settings import DistillSettings  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.model import forward as model_forward  # pylint: disable=import-outside-toplevel

  logits, _ = model_forward.forward(nnx.merge(graphdef, state), batch, settings=DistillSettings(), enable_dropout=False)
  return logits


def _ce_sum(graphdef, state, batch):
  """Summed next-token cross-entropy over the valid targets of ``batch``, and their count."""
  from maxtext_distill_plugin.loss import losses  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.loss import reductions  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.model import forward as model_forward  # pylint: disable=import-outside-toplevel

  logits = forward_logits(graphdef, state, batch)
  return reductions.masked_sum_count(losses.cross_entropy(logits, batch["targets"]), model_forward.token_mask(batch))


def held_out_cross_entropy(cfg, batches: list[dict]) -> float:
  """Token-mean cross-entropy (nats) of the model ``cfg.load_parameters_path`` on ``batches``."""
  import jax  # pylint: disable=import-outside-toplevel

  total = count = 0.0
  with loaded(cfg) as (graphdef, state):
    score = jax.jit(functools.partial(_ce_sum, graphdef))
    for batch in batches:
      loss_sum, tokens = jax.device_get(score(state, batch))
      total, count = total + float(loss_sum), count + float(tokens)
  return total / max(count, 1.0)


def unigram_cross_entropy(train_path: str, vocab_size: int, batches: list[dict]) -> float:
  """Cross-entropy of add-one-smoothed training-split token frequencies on the same targets."""
  counts = np.ones(vocab_size, np.float64)
  for ids in records.read_array_record(train_path):
    counts += np.bincount(np.asarray(ids, np.int64), minlength=vocab_size)[:vocab_size]
  log_p = np.log(counts / counts.sum())
  total = count = 0.0
  for batch in batches:
    mask = np.asarray(batch["targets_segmentation"]) != 0
    total -= float(log_p[np.asarray(batch["targets"])[mask]].sum())
    count += float(mask.sum())
  return total / max(count, 1.0)


def log_probs(graphdef, state, batch):
  """``[B, S, V]`` log-probabilities of the model at T = 1."""
  from maxtext_distill_plugin.loss import losses  # pylint: disable=import-outside-toplevel

  return losses.log_softmax_at(forward_logits(graphdef, state, batch), 1.0)


def score_sums(graphdef, state, batch, teacher_logp_BxSxV):
  """(sum, count) of CE, KL(teacher || model) at T=1 and top-1 agreement over the valid targets of ``batch``.

  Top-1 agreement of a target is 1 where ``argmax`` of the model's and of the teacher's distribution is the same
  vocabulary id, else 0; its token mean is the fraction of targets on which the two models would predict alike.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.loss import losses  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.loss import reductions  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin.model import forward as model_forward  # pylint: disable=import-outside-toplevel

  logp = log_probs(graphdef, state, batch)
  mask = model_forward.token_mask(batch)
  agree = jnp.argmax(logp, axis=-1) == jnp.argmax(teacher_logp_BxSxV, axis=-1)
  return {
      "ce": reductions.masked_sum_count(losses.cross_entropy_from_log_probs(logp, batch["targets"]), mask),
      "kl_t1": reductions.masked_sum_count(losses.kl_from_log_probs(teacher_logp_BxSxV, logp), mask),
      "top1_agreement": reductions.masked_sum_count(agree, mask),
  }


def with_perplexity(scores: dict[str, float]) -> dict[str, float]:
  return {**scores, "perplexity": math.exp(min(scores["ce"], 80.0))}


class HeldOut:
  """The first batches of MaxText's eval iterator over the held-out split, and the teacher's log-probabilities."""

  def __init__(self, configs, count: int):
    import jax  # pylint: disable=import-outside-toplevel

    self.batches = collect_eval_batches(configs.student, count)
    with loaded(configs.teacher) as (graphdef, state):
      fn = jax.jit(functools.partial(log_probs, graphdef))
      self.teacher_logp = [np.asarray(jax.device_get(fn(state, b))) for b in self.batches]
    self.tokens = target_count(self.batches)

  def teacher_scores(self) -> dict[str, float]:
    """The teacher's own held-out metrics, from its stored log-probabilities (KL 0, agreement 1 by definition)."""
    total = 0.0
    for batch, logp in zip(self.batches, self.teacher_logp):
      mask = np.asarray(batch["targets_segmentation"]) != 0
      target_logp = np.take_along_axis(logp, np.asarray(batch["targets"])[..., None], axis=-1)[..., 0]
      total -= float(target_logp[mask].sum())
    return with_perplexity({"ce": total / max(self.tokens, 1), "kl_t1": 0.0, "top1_agreement": 1.0})

  def score(self, cfg) -> dict[str, float]:
    """Held-out CE, perplexity, KL at T=1 and top-1 agreement of the model ``cfg.load_parameters_path``."""
    import jax  # pylint: disable=import-outside-toplevel

    from maxtext_distill_plugin.loss import reductions  # pylint: disable=import-outside-toplevel

    totals = None
    with loaded(cfg) as (graphdef, state):
      fn = jax.jit(functools.partial(score_sums, graphdef))
      for batch, teacher_logp in zip(self.batches, self.teacher_logp):
        sums = jax.device_get(fn(state, batch, teacher_logp))
        totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return with_perplexity(reductions.means(totals))
