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

"""In-process sampling from a MaxText model with MaxText's own KV-cache inference path (for on-policy distillation).

One compiled program per (model, :class:`SampleOptions`, prompt length P, batch B) runs

1. a batched **prefill**: the MaxText ``Transformer`` built with ``model_mode="prefill"`` runs over the right-padded
   prompts ``[B, P]`` (segment id 1 on prompt tokens, 0 on padding, as ``MaxEngine`` marks them), filling each
   attention layer's ``KVCache`` prefill part; the first token comes from the logits at position ``length - 1``.
   Where the attention kernel needs block-aligned lengths (TPU splash attention), the prompts are right-padded further
   to :func:`prefill_length.prefill_length` positions, padding marked as such (e.g. a 2032-position bucket runs a
   2048-position prefill);
2. up to N - 1 **autoregressive** steps: the same model built with ``model_mode="autoregressive"`` takes one token per
   row at position ``length + t - 1`` and appends its key and value to the cache's autoregressive part (MaxText
   masks unwritten slots and prompt padding through the cached segment ids, so rows of different lengths decode
   together). The loop ends early once every row has emitted ``eos_id``.

The parameters are the training model's own arrays (the train-mode graphdef's ``nnx.Param`` state, merged into the
decode graphdefs inside the program, under ``stop_gradient``): no copy, no reload, same mesh and shardings. The two
decode graphdefs come from ``nnx.eval_shape`` (abstract, no memory). MaxText sizes their caches from the config
(prefill part ``max_prefill_predict_length``, autoregressive part ``max_target_length`` minus it, batch
``micro_batch_size_to_train_on``), so they are built from a view of the config with those three keys set to P,
P + N and B. Memory while sampling, beyond training's: the KV cache, per attention layer
``2 * B * (P + N) * num_kv_heads * head_dim`` elements of the model dtype (plus int32 segment ids ``B * (P + N)``),
sharded over the data axes with its rows (:func:`decode_axis_rules`). The prefill projects the hidden state of each
row's last prompt position only (:meth:`_DecodeModel.run_to`), so no ``[B, P, V]`` logits exist where the lean loss
can run (:func:`lean_forward.unsupported_reason`).

Output layout (left-aligned): row b holds its prompt in columns ``[0, length_b)``, its completion right after it
(through the first EOS, which is kept), then ``pad_id`` up to ``S = P + N``; ``tokens_BxS[:, :-1]`` /
``tokens_BxS[:, 1:]`` with ``completion_mask_BxS[:, 1:]`` are the inputs and targets a teacher scores.

KV-cache decode matches a full-recompute greedy decode token for token on the tiny llama, qwen3, mistral, gemma,
gemma2, gemma3 and mixtral models (sequences shorter than their sliding windows). MLA attention (DeepSeek) falls back
to ``decode="recompute"`` (:func:`decode_path`): the train-mode model re-runs the fixed ``[B, P + N]`` buffer once per
new token, same outputs and one compile, about N times the compute of a forward pass. Not covered: sliding windows
shorter than P + N, chunked / paged / ragged attention, quantized KV caches.
"""

from typing import NamedTuple

from flax import nnx
from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp

from maxtext_distill_plugin.loss import tiles
from maxtext_distill_plugin.model import lean_forward
from maxtext_distill_plugin.model import prefill_length
from maxtext_distill_plugin.model import weight_gather
from maxtext_distill_plugin.model.sampling_filters import choose_tokens
from maxtext_distill_plugin.model.sampling_filters import SampleOptions

__all__ = ["SampleOptions", "Samples", "Sampler", "make_sampler", "decode_config", "decode_axis_rules", "decode_path"]

_PREFILL, _DECODE = "prefill", "autoregressive"  # MaxText's MODEL_MODE_PREFILL / MODEL_MODE_AUTOREGRESSIVE


class Samples(NamedTuple):
  """What :class:`Sampler` returns; S = P + N, left-aligned (see the module docstring)."""

  tokens_BxS: jnp.ndarray  # int32: prompt, completion (first EOS included), pad_id
  prompt_mask_BxS: jnp.ndarray  # bool: prompt tokens
  completion_mask_BxS: jnp.ndarray  # bool: generated tokens up to and including the first EOS
  completion_length_B: jnp.ndarray  # int32: completion tokens per row, EOS included
  hit_eos_B: jnp.ndarray  # bool: the row emitted eos_id within max_new_tokens


class _ConfigView:
  """A MaxText config with a few keys replaced; everything else is read from the wrapped config."""

  def __init__(self, base, overrides: dict):
    object.__setattr__(self, "_base", base)
    object.__setattr__(self, "_overrides", dict(overrides))

  def __getattr__(self, name):
    overrides = object.__getattribute__(self, "_overrides")
    return overrides[name] if name in overrides else getattr(object.__getattribute__(self, "_base"), name)

  def __setattr__(self, name, value):
    raise AttributeError(f"the decode view of the config is read-only ({name})")


_CACHE_BATCH_AXES = ("cache_batch", "cache_batch_prefill")  # MaxText's logical names of the KV cache's batch axis


def decode_axis_rules(rules) -> tuple:
  """MaxText's logical axis ``rules`` with the KV cache's batch axis sharded as the decode batch's rows are.

  MaxText's defaults replicate ``cache_batch`` and ``cache_batch_prefill``: its serving meshes shard the cache by
  heads. On the training mesh the rows are sharded over the data axes (FSDP), so a replicated cache holds every row's
  keys and values on every device, and each decode step gathers the whole autoregressive cache, every layer, every
  token (measured on a v5p-8 for a 1B-shaped student: 72 GB of all-gathers per 512-token sampling call, 4 per layer
  and token). Sharded as the rows are, a device keeps and reads its own rows' cache only. Rules without a
  ``decode_batch`` (or ``activation_batch``) entry are returned unchanged.
  """
  rules = tuple((name, axes) for name, axes in rules)
  batch_axes = [axes for name, axes in rules if name in ("decode_batch", "activation_batch")]
  if not batch_axes:
    return rules
  kept = tuple((name, axes) for name, axes in rules if name not in _CACHE_BATCH_AXES)
  return tuple((name, batch_axes[0]) for name in _CACHE_BATCH_AXES) + kept


def decode_config(config, *, batch: int, prompt_len: int, max_new_tokens: int):
  """``config`` as MaxText's decode-mode models need it: cache batch B, prefill part P, total P + N, no sowing, the
  cache sharded with its rows (:func:`decode_axis_rules`)."""
  return _ConfigView(
      config,
      {
          "micro_batch_size_to_train_on": int(batch),
          "max_prefill_predict_length": int(prompt_len),
          "max_target_length": int(prompt_len) + int(max_new_tokens),
          # Attention sows its output projection for the feature loss when distill_beta > 0; sampling needs none.
          "distill_beta": 0.0,
          "logical_axis_rules": decode_axis_rules(config.logical_axis_rules),
      },
  )


def _rest_like(template: dict, source: dict):
  """The non-parameter state (RNG keys and counts) for a decode graph: ``source``'s value where it has the same path
  and shape, else a fresh one (keys from seed 0, zeros). Dropout is off while sampling, so these are never drawn."""
  if isinstance(template, dict):
    source = source if isinstance(source, dict) else {}
    return {k: _rest_like(v, source.get(k)) for k, v in template.items()}
  if source is not None and getattr(source, "shape", None) == template.shape and source.dtype == template.dtype:
    return source
  if jnp.issubdtype(template.dtype, jax.dtypes.prng_key):
    keys = jax.random.split(jax.random.key(0), max(1, int(jnp.prod(jnp.array(template.shape)))))
    return keys.reshape(template.shape)
  return jnp.zeros(template.shape, template.dtype)


class _DecodeModel:
  """One decode-mode graph (abstract) and how to run it on the training parameters and a cache."""

  def __init__(self, config, mesh, mode: str):
    from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel

    self.mode = mode
    with nn_partitioning.axis_rules(config.logical_axis_rules):
      self.abstract = nnx.eval_shape(model_creation_utils.get_nnx_create_model_fn(config, mesh=mesh, model_mode=mode))
    self.graphdef = nnx.split(self.abstract, nnx.Param, nnx.Cache, ...)[0]

  def _template(self, which):
    # A fresh abstract state per use: nnx.replace_by_pure_dict fills it in place.
    _, params, cache, rest = nnx.split(self.abstract, nnx.Param, nnx.Cache, ...)
    return {"params": params, "cache": cache, "rest": rest}[which]

  def zero_cache(self) -> dict:
    return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), nnx.to_pure_dict(self._template("cache")))

  def _model(self, params, rest_source: dict, cache: dict):
    cache_state = self._template("cache")
    nnx.replace_by_pure_dict(cache_state, cache)
    rest_state = self._template("rest")
    nnx.replace_by_pure_dict(rest_state, _rest_like(nnx.to_pure_dict(rest_state), rest_source))
    return nnx.merge(self.graphdef, params, cache_state, rest_state, copy=True)

  def run(self, params, rest_source: dict, cache: dict, tokens, positions, segment_ids=None):
    """Logits [B, T, V] and the updated cache (pure dict)."""
    model = self._model(params, rest_source, cache)
    logits = model(tokens, positions, decoder_segment_ids=segment_ids, enable_dropout=False, model_mode=self.mode)
    return logits, nnx.to_pure_dict(nnx.state(model, nnx.Cache))

  def run_to(self, params, rest_source: dict, cache: dict, tokens, positions, segment_ids, at_B):
    """Float32 logits [B, V] at position ``at_B[b]`` of each row, and the updated cache (pure dict).

    The decoder's hidden states are projected at those positions only: MaxText's own call returns every position's
    logits, a ``[B, T, V]`` float32 array (and its bfloat16 source) that XLA keeps, since the positions are data
    (measured for a 1B-shaped student on a v5p-8 at 32 rows per device: 46.8 GiB of the sampler's temporaries).
    """
    if lean_forward.unsupported_reason(self.abstract.config) is not None:
      logits_BxTxV, cache = self.run(params, rest_source, cache, tokens, positions, segment_ids)
      return jnp.take_along_axis(logits_BxTxV, at_B[:, None, None], axis=1)[:, 0].astype(jnp.float32), cache
    model = self._model(params, rest_source, cache)
    batch = {"inputs": tokens, "inputs_position": positions, "inputs_segmentation": segment_ids}
    hidden_BxTxD, unembed_DxV, softcap = lean_forward.forward_hidden(
        model, batch, enable_dropout=False, model_mode=self.mode
    )
    at_Bx1xD = jnp.take_along_axis(hidden_BxTxD, at_B[:, None, None], axis=1)
    logits_Bx1xV, _ = tiles.tile_logits(at_Bx1xD, unembed_DxV, 0, softcap)
    return logits_Bx1xV[:, 0], nnx.to_pure_dict(nnx.state(model, nnx.Cache))


def assemble(prompt_BxP, length_B, completion_BxN, completion_length_B, hit_eos_B, pad_id: int) -> Samples:
  """Left-aligned :class:`Samples`: column j of row b is prompt[b, j] for j < L_b, completion[b, j - L_b] for
  L_b <= j < L_b + n_b, else pad_id (L = prompt length, n = completion length)."""
  batch, prompt_len = prompt_BxP.shape
  new = completion_BxN.shape[1]
  cols_S = jnp.arange(prompt_len + new)[None, :]
  start_Bx1, stop_Bx1 = length_B[:, None], (length_B + completion_length_B)[:, None]
  prompt_mask = cols_S < start_Bx1
  completion_mask = (cols_S >= start_Bx1) & (cols_S < stop_Bx1)
  tokens = jnp.full((batch, prompt_len + new), pad_id, jnp.int32).at[:, :prompt_len].set(prompt_BxP.astype(jnp.int32))
  tokens = jnp.where(prompt_mask, tokens, pad_id)
  kept_BxN = jnp.arange(new)[None, :] < completion_length_B[:, None]
  rows_BxN = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, new))
  tokens = tokens.at[rows_BxN, start_Bx1 + jnp.arange(new)[None, :]].set(jnp.where(kept_BxN, completion_BxN, pad_id))
  return Samples(tokens, prompt_mask, completion_mask, completion_length_B.astype(jnp.int32), hit_eos_B)


class Sampler:
  """``sampler(model_state, prompt_tokens_BxP, prompt_length_B, rng) -> Samples``; see :func:`make_sampler`.

  ``fn`` is the same computation un-jitted (to call inside another traced function, under the caller's mesh and
  logical axis rules); :meth:`compile_count` is the number of programs the jitted one has compiled.
  """

  def __init__(
      self,
      model_graphdef,
      config,
      options: SampleOptions,
      prompt_len: int,
      batch: int,
      mesh,
      decode: str,
      prefill_len,
      gather_weights=None,
  ):
    self.options, self.prompt_len, self.batch, self.mesh = options, int(prompt_len), int(batch), mesh
    self.decode = decode
    # Applied inside fn too: it is traced under the caller's rules when another program calls it.
    self._rules = decode_axis_rules(config.logical_axis_rules)
    self._train_graphdef = model_graphdef
    # Right padding the prefill's attention kernel needs (TPU splash blocks); the prompt bucket itself is unchanged.
    self.prefill_len = int(prefill_len)
    self.gather_weights = gather_weights if decode == "kv_cache" else False
    if decode == "kv_cache":
      view = decode_config(config, batch=batch, prompt_len=self.prefill_len, max_new_tokens=options.max_new_tokens)
      self._prefill = _DecodeModel(view, mesh, _PREFILL)
      self._decode = _DecodeModel(view, mesh, _DECODE)
    self._jitted = jax.jit(self.fn)

  def _kv_cache_start(self, params, rest, prompt_BxP, length_B):
    """Prefill: logits [B, V] at each row's last prompt token, the filled cache, and the step that extends it."""
    prompt_BxP = jnp.pad(
        prompt_BxP, ((0, 0), (0, self.prefill_len - self.prompt_len)), constant_values=self.options.pad_id
    )
    positions_BxP = jnp.broadcast_to(jnp.arange(self.prefill_len, dtype=jnp.int32), prompt_BxP.shape)
    segments_BxP = (positions_BxP < length_B[:, None]).astype(jnp.int32)
    last_BxV, cache = self._prefill.run_to(
        params, rest, self._decode.zero_cache(), prompt_BxP, positions_BxP, segments_BxP, length_B - 1
    )

    def step_logits(cache, previous_B, step):
      position_Bx1 = (length_B + step - 1)[:, None]
      logits_Bx1xV, cache = self._decode.run(params, rest, cache, previous_B[:, None], position_Bx1)
      return logits_Bx1xV[:, 0], cache

    return last_BxV, cache, step_logits

  def _recompute_start(self, model, prompt_BxP, length_B):
    """The fallback: the train-mode model re-runs the whole fixed-length [B, P + N] buffer for every new token
    (causal attention makes the right padding harmless); N full forwards instead of one prefill and N - 1 steps."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rows_B = jax.lax.stop_gradient(params), jnp.arange(prompt_BxP.shape[0])
    width = self.prompt_len + self.options.max_new_tokens

    def logits_at(tokens_BxS, at_B):
      positions_BxS = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), tokens_BxS.shape)
      ones_BxS = jnp.ones_like(tokens_BxS)
      logits = nnx.merge(graphdef, params, rest, copy=True)(
          tokens_BxS, positions_BxS, decoder_segment_ids=ones_BxS, enable_dropout=False
      )
      return jnp.take_along_axis(logits, at_B[:, None, None], axis=1)[:, 0]

    def step_logits(tokens_BxS, previous_B, step):
      at_B = length_B + step - 1
      tokens_BxS = tokens_BxS.at[rows_B, at_B].set(previous_B)
      return logits_at(tokens_BxS, at_B), tokens_BxS

    in_prompt_BxP = jnp.arange(self.prompt_len)[None, :] < length_B[:, None]
    tokens_BxS = jnp.full((prompt_BxP.shape[0], width), self.options.pad_id, jnp.int32)
    tokens_BxS = tokens_BxS.at[:, : self.prompt_len].set(jnp.where(in_prompt_BxP, prompt_BxP, self.options.pad_id))
    return logits_at(tokens_BxS, length_B - 1), tokens_BxS, step_logits

  def fn(self, model_state, prompt_tokens_BxP, prompt_length_B, rng) -> Samples:
    """Prefill, then the autoregressive loop; no gradient flows out (integer tokens, parameters stop_gradient)."""
    with nn_partitioning.axis_rules(self._rules):
      return self._sample(model_state, prompt_tokens_BxP, prompt_length_B, rng)

  def _sample(self, model_state, prompt_tokens_BxP, prompt_length_B, rng) -> Samples:
    opts, new = self.options, self.options.max_new_tokens
    model = nnx.merge(self._train_graphdef, model_state)
    prompt_BxP = prompt_tokens_BxP.astype(jnp.int32)
    length_B = jnp.clip(prompt_length_B.astype(jnp.int32), 1, self.prompt_len)
    batch = prompt_BxP.shape[0]
    keys_N = jax.random.split(rng, new)
    if self.decode == "kv_cache":
      _, params, rest = nnx.split(model, nnx.Param, ...)
      params = jax.lax.stop_gradient(params)
      if self.gather_weights is None:  # decided at trace time, from the parameters' shapes and shardings
        self.gather_weights = weight_gather.fits(params, self.mesh)
      if self.gather_weights:
        params = weight_gather.gathered(params, self.mesh)
      start = self._kv_cache_start(params, nnx.to_pure_dict(rest), prompt_BxP, length_B)
    else:
      start = self._recompute_start(model, prompt_BxP, length_B)
    last_BxV, decode_state, step_logits = start
    first_B = choose_tokens(last_BxV, keys_N[0], opts)
    tokens_BxN = jnp.full((batch, new), opts.pad_id, jnp.int32).at[:, 0].set(first_B)
    carry = (jnp.int32(1), decode_state, tokens_BxN, first_B, first_B == opts.eos_id, jnp.ones((batch,), jnp.int32))

    def unfinished(carry):
      step, _, _, _, done_B, _ = carry
      return (step < new) & ~jnp.all(done_B)

    def decode_step(carry):
      step, decode_state, tokens_BxN, previous_B, done_B, count_B = carry
      logits_BxV, decode_state = step_logits(decode_state, previous_B, step)
      token_B = jnp.where(done_B, opts.pad_id, choose_tokens(logits_BxV, keys_N[step], opts))
      tokens_BxN = jax.lax.dynamic_update_index_in_dim(tokens_BxN, token_B, step, axis=1)
      count_B = count_B + (~done_B).astype(jnp.int32)
      return step + 1, decode_state, tokens_BxN, token_B, done_B | (token_B == opts.eos_id), count_B

    _, _, tokens_BxN, _, done_B, count_B = jax.lax.while_loop(unfinished, decode_step, carry)
    return assemble(prompt_BxP, length_B, tokens_BxN, count_B, done_B, opts.pad_id)

  def __call__(self, model_state, prompt_tokens_BxP, prompt_length_B, rng) -> Samples:
    """Samples one completion per row.

    Args:
      model_state: the ``nnx.State`` that goes with ``model_graphdef`` (the training model's, as it is now).
      prompt_tokens_BxP: int [B, P], each prompt in columns ``[0, length)``; what follows is ignored.
      prompt_length_B: int [B], clipped to [1, P].
      rng: a JAX key; the same key gives the same samples.
    """
    if tuple(prompt_tokens_BxP.shape) != (self.batch, self.prompt_len):
      raise ValueError(
          f"prompt_tokens_BxP has shape {tuple(prompt_tokens_BxP.shape)}; this sampler was built for"
          f" ({self.batch}, {self.prompt_len}): pad prompts on the right to prompt_len and pass their lengths."
      )
    with jax.set_mesh(self.mesh), nn_partitioning.axis_rules(self._rules):
      return self._jitted(model_state, prompt_tokens_BxP, prompt_length_B, rng)

  def compile_count(self) -> int:
    return self._jitted._cache_size()  # pylint: disable=protected-access


def decode_path(config) -> str:
  """``"kv_cache"``, or ``"recompute"`` where MaxText 0.2.5's own decode fails on the tiny CPU shapes tried here:
  MLA attention (DeepSeek; in ``MaxEngine`` too: its cache is sized with ``head_dim``, its keys have
  ``qk_nope_head_dim + qk_rope_head_dim``), and the ``default`` decoder block with grouped KV heads (its
  autoregressive cache comes back with another number of KV heads than it went in with)."""
  if str(getattr(config, "attention_type", "global")).lower() == "mla":
    return "recompute"
  block = getattr(config.decoder_block, "value", config.decoder_block)
  if block == "default" and int(config.num_kv_heads) != int(config.num_query_heads):
    return "recompute"
  return "kv_cache"


def make_sampler(
    model_graphdef,
    config,
    options: SampleOptions,
    prompt_len: int,
    batch: int,
    *,
    mesh=None,
    decode: str = "auto",
    prefill_len: int | None = None,
    gather_weights: bool | None = None,
) -> Sampler:
  """A :class:`Sampler` for the model ``(model_graphdef, model_state)`` (``nnx.split`` of a MaxText ``Transformer``
  built for training) whose MaxText config is ``config``; it compiles once for these static shapes, whatever the
  prompt lengths. ``mesh`` defaults to the config's (the training mesh); ``decode`` is ``"kv_cache"``,
  ``"recompute"`` or ``"auto"`` (:func:`decode_path`); ``prefill_len`` (at least ``prompt_len``) is the positions
  the KV-cache prefill runs over, by default what the mesh's attention kernel accepts
  (:func:`prefill_length.prefill_length`); ``gather_weights`` gathers the FSDP-sharded weights once per call
  (:mod:`weight_gather`), by default where the gathered copy fits."""
  if int(prompt_len) < 1 or int(batch) < 1:
    raise ValueError(f"prompt_len={prompt_len} and batch={batch} must be at least 1.")
  if prefill_len is not None and int(prefill_len) < int(prompt_len):
    raise ValueError(f"prefill_len={prefill_len} must be at least prompt_len={prompt_len}.")
  if decode not in ("auto", "kv_cache", "recompute"):
    raise ValueError(f"decode={decode!r}: use 'auto', 'kv_cache' or 'recompute'.")
  decode = decode_path(config) if decode == "auto" else decode
  if mesh is None:
    from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

    mesh = maxtext_utils.get_mesh_from_config(config)
  if prefill_len is None:
    prefill_len = prefill_length.prefill_length(config, prompt_len, mesh.devices.flat[0].platform)
  return Sampler(model_graphdef, config, options, prompt_len, batch, mesh, decode, prefill_len, gather_weights)
