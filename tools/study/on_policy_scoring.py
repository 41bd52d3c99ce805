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

"""Scores of a model on held-out function prompts (the on-policy arms): every model on the same host-side batches.

* ``ce``: token-mean CE of the reference bodies given their prompts (completion-only targets, EOS included), by
  :func:`maxtext_distill_plugin.demo.scoring.held_out_cross_entropy`.
* ``teacher_nll``: the teacher's token-mean NLL of the model's greedy completions of the prompts, the trainer's
  ``eval/teacher_nll_of_student_samples`` (the samples come from :class:`training.on_policy.OnPolicy`, i.e.
  :mod:`model.sampling`, with the run's ``distill_sample_max_new_tokens``).
* ``first_line_match``: the fraction of prompts whose greedy completion's first line equals the reference body's
  (trailing whitespace ignored); both are decoded with the demo's SentencePiece model.
* ``completion_length``: mean greedy completion tokens (EOS included).

The jitted functions are made once, for the first model's graph, and reused for every checkpoint of that shape.
"""

import functools

import numpy as np

from maxtext_distill_plugin.demo import data as demo_data
from maxtext_distill_plugin.demo import scoring
from tools.study import function_data


def collect_eval_batches(cfg, count: int) -> list[dict]:
  """The first ``count`` batches of MaxText's eval iterator (the held-out chats), on the host."""
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline import input_pipeline_interface  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

  mesh = maxtext_utils.get_mesh_from_config(cfg)
  with jax.set_mesh(mesh):
    _, iterator = input_pipeline_interface.create_data_iterator(cfg, mesh)
    batches = [jax.device_get(next(iterator)) for _ in range(count)]
  return batches


def _teacher_nll(teacher_graphdef, settings, chunked, teacher_state, batch):
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.training import student_objective  # pylint: disable=import-outside-toplevel

  return student_objective.student_cross_entropy(
      nnx.merge(teacher_graphdef, teacher_state), batch, settings, chunked=chunked
  )


def first_line_matches(samples_tokens, completion_mask, batch: dict, rows, decode) -> list[bool]:
  """Per scored row, whether the completion's first line equals the reference body's (``batch``'s targets)."""
  targets, scored = np.asarray(batch["targets"]), np.asarray(batch["targets_segmentation"]) != 0
  tokens, mask = np.asarray(samples_tokens), np.asarray(completion_mask)
  return [
      function_data.first_line(decode(tokens[b][mask[b]])) == function_data.first_line(decode(targets[b][scored[b]]))
      for b in range(tokens.shape[0])
      if rows[b]
  ]


class SampleScorer:
  """Held-out chats, the teacher, and the study's scores of any model on them; ``matches`` says which greedy
  completions count as right (``match_key`` in the scores): ``matches(tokens_BxS, completion_mask_BxS, batch, rows)``
  gives one bool per scored row."""

  def __init__(self, configs, count: int, matches, match_key: str):
    """``configs``: an on-policy arm's (λ > 0), whose student is the model whose shape every scored model has."""
    import jax  # pylint: disable=import-outside-toplevel

    from maxtext_distill_plugin.training import on_policy  # pylint: disable=import-outside-toplevel
    from maxtext_distill_plugin.training import step  # pylint: disable=import-outside-toplevel

    self.configs = configs
    self.batches = collect_eval_batches(configs.student, count)
    self.tokens = scoring.target_count(self.batches)
    self._matches, self._match_key = matches, match_key
    self._special = on_policy.special_ids(configs.student)
    self._chunked = step.use_chunked_loss(configs.settings, configs.student, configs.teacher)
    self._jax = jax
    self._policy = None
    self._nll = None

  def _setup(self, student_graphdef, teacher_graphdef, mesh):
    from maxtext_distill_plugin.training import on_policy  # pylint: disable=import-outside-toplevel

    if self._policy is None:
      self._policy = on_policy.OnPolicy(self.configs, mesh, student_graphdef, teacher_graphdef, self._special)
      self._nll = self._jax.jit(functools.partial(_teacher_nll, teacher_graphdef, self.configs.settings, self._chunked))

  def score(self, student_cfg=None) -> dict[str, float]:
    """Scores of the student ``student_cfg.load_parameters_path``; of the teacher itself when None."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

    who = "teacher" if student_cfg is None else "student"
    ce = scoring.held_out_cross_entropy(self.configs.teacher if student_cfg is None else student_cfg, self.batches)
    mesh = maxtext_utils.get_mesh_from_config(self.configs.student)
    nll_sum = nll_count = length = 0.0
    matches = []
    with scoring.loaded(self.configs.teacher) as (teacher_graphdef, teacher_state):
      with scoring.loaded(student_cfg or self.configs.student) as (student_graphdef, student_state):
        self._setup(student_graphdef, teacher_graphdef, mesh)
        model_state = teacher_state if student_cfg is None else student_state
        for batch in self.batches:
          device_batch = {k: jnp.asarray(v) for k, v in batch.items()}
          built, samples, rows, _ = self._policy.sample_batch(
              who, model_state, device_batch, self._jax.random.key(0), greedy=True
          )
          total, count = self._jax.device_get(self._nll(teacher_state, built))
          nll_sum, nll_count = nll_sum + float(total), nll_count + float(count)
          rows = np.asarray(self._jax.device_get(rows))
          length += float(np.asarray(self._jax.device_get(samples.completion_length_B))[rows].sum())
          matches += self._matches(samples.tokens_BxS, samples.completion_mask_BxS, batch, rows)
    return {
        "ce": ce,
        "teacher_nll": nll_sum / max(nll_count, 1.0),
        self._match_key: float(np.mean(matches)) if matches else 0.0,
        "completion_length": length / max(len(matches), 1),
        "prompts": len(matches),
    }


class FunctionScorer(SampleScorer):
  """:class:`SampleScorer` of function chats: a completion is right when its first line is the body's."""

  def __init__(self, configs, count: int, sentencepiece_model: str):
    tokenizer = demo_data.load_tokenizer(sentencepiece_model)
    newline = tokenizer.PieceToId("\n")
    # Decoded after a newline, as mid-file text: SentencePiece drops the leading space of a text's first piece.
    self.decode = lambda ids: tokenizer.DecodeIds([newline] + [int(i) for i in ids])[1:]
    super().__init__(
        configs,
        count,
        lambda tokens, mask, batch, rows: first_line_matches(tokens, mask, batch, rows, self.decode),
        "first_line_match",
    )
