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

"""The KV-cache sampler on the tiny 2-layer teacher of the ``teacher_checkpoint`` fixture.

The reference is a naive sampler: the train-mode model runs on the whole sequence (prompt and tokens so far,
right-padded to a fixed length, which causal attention makes harmless) and the argmax at each row's last position
is appended, one full forward per new token.
"""

import contextlib
import dataclasses
from typing import Any

from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import TINY_YAML

B, P, N = 3, 8, 8
PAD = 0
LENGTHS = np.array([8, 3, 5], np.int32)


@dataclasses.dataclass
class _Case:
  cfg: Any
  mesh: Any
  graphdef: Any
  state: Any
  prompt: np.ndarray  # [B, P], right-padded with PAD
  eos: int
  want: np.ndarray  # the naive greedy sequences [B, P + N] with that eos
  want_lengths: np.ndarray
  forward: Any = None  # jitted train-mode forward (state, tokens) -> logits

  def context(self):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn_partitioning.axis_rules(self.cfg.logical_axis_rules))
    return stack

  def sampler(self, batch=B, prompt_len=P, decode="auto", prefill_len=None, **options):
    from maxtext_distill_plugin.model import sampling  # pylint: disable=import-outside-toplevel

    opts = sampling.SampleOptions(**{"max_new_tokens": N, "eos_id": self.eos, "pad_id": PAD, **options})
    return sampling.make_sampler(
        self.graphdef, self.cfg, opts, prompt_len, batch, mesh=self.mesh, decode=decode, prefill_len=prefill_len
    )

  def full_logits(self, tokens):
    """float64 logits [B, S, V] of the train-mode model."""
    with self.context():
      return np.asarray(self.forward(self.state, jnp.asarray(tokens)), np.float64)


def _train_forward(graphdef):
  """A jitted train-mode forward (a GraphDef is not hashable, so it is closed over rather than static)."""

  def forward(state, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    model = nnx.merge(graphdef, state)
    return model(tokens, positions, decoder_segment_ids=jnp.ones_like(tokens), enable_dropout=False)

  return jax.jit(forward)


def _naive_greedy(case: _Case, prompt, lengths, eos):
  """Sequences [B, P + N] (prompt, completion through EOS, PAD) and completion lengths, by full recompute."""
  seq = np.full((prompt.shape[0], P + N), PAD, np.int64)
  stop = lengths.copy()
  for b, length in enumerate(lengths):
    seq[b, :length] = prompt[b, :length]
  done = np.zeros(len(lengths), bool)
  for _ in range(N):
    logits = case.full_logits(seq)
    for b in np.flatnonzero(~done):
      seq[b, stop[b]] = int(np.argmax(logits[b, stop[b] - 1]))
      done[b] = seq[b, stop[b]] == eos
      stop[b] += 1
  return seq, stop - lengths


@pytest.fixture(scope="module")
def case(tmp_path_factory, teacher_checkpoint) -> _Case:
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

  configs = config.build([
      "sampling_test",
      TINY_YAML,
      "run_name=sampling",
      f"base_output_directory={tmp_path_factory.mktemp('sampling')}",
      f"teacher_overrides.load_parameters_path={teacher_checkpoint}",
  ])
  cfg = configs.teacher
  mesh = maxtext_utils.get_mesh_from_config(cfg)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(cfg.logical_axis_rules):
    graphdef, state = nnx.split(model_creation_utils.from_pretrained(cfg, mesh=mesh))
  prompt = np.random.default_rng(0).integers(1, cfg.vocab_size, (B, P)).astype(np.int32)
  prompt[np.arange(P)[None, :] >= LENGTHS[:, None]] = PAD
  partial = _Case(cfg, mesh, graphdef, state, prompt, -1, None, None, _train_forward(graphdef))
  free, _ = _naive_greedy(partial, prompt, LENGTHS, eos=-1)
  # EOS: the greedy token of the row/step that first emits it latest (inside the completion), so the stop is real.
  first_steps = {}  # token -> latest step (in 1..N-2) at which some row emits it for the first time
  for b, length in enumerate(LENGTHS):
    completion = list(free[b, length : length + N])
    for step in range(1, N - 1):
      if completion[step] not in completion[:step]:
        first_steps[int(completion[step])] = max(step, first_steps.get(int(completion[step]), 0))
  assert first_steps, free
  eos = max(first_steps, key=first_steps.get)
  want, want_lengths = _naive_greedy(partial, prompt, LENGTHS, eos=eos)
  return dataclasses.replace(partial, eos=eos, want=want, want_lengths=want_lengths)


@pytest.fixture(scope="module")
def greedy(case):
  return case.sampler(temperature=0.0)


@pytest.mark.parametrize("decode", ("kv_cache", "recompute"))
def test_greedy_equals_naive_full_recompute(case, greedy, decode):
  """The KV-cache path (what the llama-style model gets) and the fallback (what MLA models get) alike."""
  sampler = greedy if decode == "kv_cache" else case.sampler(temperature=0.0, decode="recompute")
  assert sampler.decode == decode
  out = sampler(case.state, case.prompt, LENGTHS, jax.random.key(0))
  assert (case.want_lengths < N).any(), "some row must stop at the EOS"  # the stop is exercised
  np.testing.assert_array_equal(np.asarray(out.tokens_BxS), case.want)
  np.testing.assert_array_equal(out.completion_length_B, case.want_lengths)
  hit = np.array([case.want[b, LENGTHS[b] + n - 1] == case.eos for b, n in enumerate(case.want_lengths)])
  np.testing.assert_array_equal(out.hit_eos_B, hit)
  cols = np.arange(P + N)[None, :]
  np.testing.assert_array_equal(out.prompt_mask_BxS, cols < LENGTHS[:, None])
  completion = (cols >= LENGTHS[:, None]) & (cols < (LENGTHS + case.want_lengths)[:, None])
  np.testing.assert_array_equal(out.completion_mask_BxS, completion)


def test_a_prefill_padded_for_the_attention_kernel_samples_the_same(case, greedy):
  """The prefill over more positions than the prompt bucket (what TPU splash attention needs, e.g. 2032 -> 2048)
  samples exactly what the bucket-sized one does: the extra positions are padding, masked like a short prompt's."""
  assert greedy.prefill_len == P  # on the CPU the prefill runs over the bucket itself
  padded = case.sampler(temperature=0.0, prefill_len=P + 5)
  assert padded.prefill_len == P + 5
  out = padded(case.state, case.prompt, LENGTHS, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(out.tokens_BxS), case.want)
  np.testing.assert_array_equal(out.completion_length_B, case.want_lengths)


def test_compiles_once_for_any_prompt_lengths(case, greedy):
  for lengths in ([1, 8, 2], [4, 4, 4], [7, 1, 6]):
    lengths = np.array(lengths, np.int32)
    prompt = np.where(np.arange(P)[None, :] < lengths[:, None], case.prompt.max(1, keepdims=True), PAD)
    out = greedy(case.state, prompt.astype(np.int32), lengths, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(out.prompt_mask_BxS).sum(1), lengths)
  assert greedy.compile_count() == 1


def test_sampling_is_reproducible_and_filters_reduce_to_greedy(case, greedy):
  want = np.asarray(greedy(case.state, case.prompt, LENGTHS, jax.random.key(0)).tokens_BxS)
  sampler = case.sampler(temperature=1.0)
  first = np.asarray(sampler(case.state, case.prompt, LENGTHS, jax.random.key(7)).tokens_BxS)
  again = np.asarray(sampler(case.state, case.prompt, LENGTHS, jax.random.key(7)).tokens_BxS)
  other = np.asarray(sampler(case.state, case.prompt, LENGTHS, jax.random.key(8)).tokens_BxS)
  np.testing.assert_array_equal(first, again)
  assert (first != other).any()
  for options in ({"temperature": 1.0, "top_k": 1}, {"temperature": 1.0, "top_p": 1e-6}):
    got = case.sampler(**options)(case.state, case.prompt, LENGTHS, jax.random.key(7)).tokens_BxS
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=str(options))


def test_token_frequencies_match_the_softmax(case):
  """T=1, no filter: 4096 draws of the first new token after one prompt against softmax of the model's logits."""
  draws, length = 4096, 5
  prompt = np.broadcast_to(case.prompt[:1, :], (draws, P)).copy()
  prompt[:, length:] = PAD
  out = case.sampler(batch=draws, max_new_tokens=1, temperature=1.0)(
      case.state, prompt, np.full((draws,), length, np.int32), jax.random.key(11)
  )
  counts = np.bincount(np.asarray(out.tokens_BxS)[:, length], minlength=case.cfg.vocab_size)
  logits = case.full_logits(prompt[:1])[0, length - 1]
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()

  def chi_square(p):
    expected = draws * p
    big = expected >= 5  # pool the rare tokens into one bin so every bin expects at least 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    return float(((observed - expected) ** 2 / expected).sum()), observed.size - 1

  stat, dof = chi_square(probs)
  assert stat < dof + 6 * np.sqrt(2 * dof), (stat, dof)  # about 6 standard deviations of a chi-square(dof)
  flatter = np.exp((logits - logits.max()) / 2.0)  # the softmax at T=2: the test must tell them apart
  flat_stat, flat_dof = chi_square(flatter / flatter.sum())
  assert flat_stat > flat_dof + 6 * np.sqrt(2 * flat_dof), (flat_stat, flat_dof)
