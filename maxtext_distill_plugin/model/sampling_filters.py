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

"""Next-token choice from logits: greedy, temperature, top-k and top-p (nucleus), and the options that select them.

The order is the usual one of Hugging Face ``generate`` and vLLM: divide the logits by the temperature, keep the
``top_k`` largest, then keep the smallest set of the survivors whose probability (at that temperature) reaches
``top_p``, and draw from what is left, renormalised. MaxText's own ``inference_utils.sampling`` applies the nucleus
cut on the untempered probabilities and cannot combine it with top-k outside its ``composite`` mode, so it is not
reused here.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleOptions:
  """Static sampling settings (part of the compiled program: a change recompiles); keyword arguments only.

  Attributes:
    max_new_tokens: tokens generated per row at most (N), the EOS included.
    eos_id: the token that ends a row's completion; tokens after it are ``pad_id`` and masked.
    temperature: 0 is greedy (argmax); otherwise logits are divided by it before drawing.
    top_p: nucleus mass in (0, 1]; 1 is off.
    top_k: keep the k most likely tokens; 0 is off.
    pad_id: filler after the completion and after the prompt.
  """

  max_new_tokens: int
  eos_id: int
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  pad_id: int = 0

  def __post_init__(self):
    problems = []
    if int(self.max_new_tokens) < 1:
      problems.append(f"max_new_tokens={self.max_new_tokens!r} must be at least 1")
    if math.isnan(float(self.temperature)) or float(self.temperature) < 0.0:
      problems.append(f"temperature={self.temperature!r} must be >= 0 (0 is greedy)")
    if not 0.0 < float(self.top_p) <= 1.0:
      problems.append(f"top_p={self.top_p!r} must be in (0, 1] (1 is off)")
    if int(self.top_k) < 0:
      problems.append(f"top_k={self.top_k!r} must be >= 0 (0 is off)")
    if problems:
      raise ValueError("Bad sampling options: " + "; ".join(problems) + ".")

  @property
  def greedy(self) -> bool:
    return float(self.temperature) == 0.0


def filtered_logits(logits_BxV: jnp.ndarray, *, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Tempered logits with everything outside the top-k and the top-p nucleus set to -inf.

  z = logits / T;  top-k keeps z_v >= (k-th largest z);  top-p sorts the survivors descending,
  p = softmax(z_sorted), and keeps position j when sum_{i<j} p_i < top_p (the first always stays), i.e. the
  smallest prefix whose mass reaches top_p. Ties at a cut-off value are all kept.

  Args:
    logits_BxV: float [B, V].
    temperature: > 0.
    top_k: 0 is off; clamped to V.
    top_p: in (0, 1]; 1 is off.

  Returns:
    float32 [B, V], -inf where a token may not be drawn.
  """
  z = logits_BxV.astype(jnp.float32) / jnp.float32(temperature)
  vocab = z.shape[-1]
  if 0 < top_k < vocab:
    kth_Bx1 = jax.lax.top_k(z, top_k)[0][:, -1:]
    z = jnp.where(z < kth_Bx1, -jnp.inf, z)
  if top_p < 1.0:
    sorted_BxV = -jnp.sort(-z, axis=-1)
    p_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(p_BxV, axis=-1) - p_BxV
    keep_BxV = (mass_before_BxV < top_p).at[:, 0].set(True)
    cut_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    z = jnp.where(z < cut_Bx1, -jnp.inf, z)
  return z


def choose_tokens(logits_BxV: jnp.ndarray, rng: jax.Array, options: SampleOptions) -> jnp.ndarray:
  """int32 [B]: argmax when ``options.greedy``, else one draw per row from softmax(:func:`filtered_logits`)."""
  if options.greedy:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  z = filtered_logits(logits_BxV, temperature=options.temperature, top_k=int(options.top_k), top_p=options.top_p)
  return jax.random.categorical(rng, z, axis=-1).astype(jnp.int32)
