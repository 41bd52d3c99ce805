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

"""Final hidden states and output projection of a MaxText NNX ``Transformer``, without logits.

The lean losses (:mod:`chunked_objective`, and :mod:`chunked_sparse` offline) need, per model,

  logits_BxSxV == cap(hidden_BxSxD @ unembed_DxV),   cap(z) = c * tanh(z / c) or identity,

with ``hidden`` the decoder output after MaxText's final norm and dropout.
MaxText 0.2.5 has no switch that returns this: ``Transformer.__call__`` returns
logits only, and ``NNXDecoder.__call__`` returns ``(logits, raw_hidden, ...)``
where ``raw_hidden`` is *before* ``decoder_norm`` (with ``num_vocab_tiling > 1``
it skips the logits and sows the same raw state, which is what MaxText's
vocabulary tiling consumes). So :func:`forward_hidden` calls the decoder
directly, as ``Transformer.__call__`` does for text-only inputs, takes
``raw_hidden``, and applies the two head steps of ``apply_output_head`` that
precede the projection: ``decoder_norm`` and ``dropout``. The decoder's own
logits, when it computes them, are unused, and XLA removes them from the jitted
step (the integration test checks the compiled program has no ``[B, S, V]``
array); outside ``jit`` they would still be computed and dropped.

The projection mirrors ``apply_output_head``:

* untied (``logits_via_embedding=False``): ``decoder.logits_dense.kernel``
  ``[D, V]``, cast to the layer's compute dtype; no soft cap (MaxText applies
  ``final_logits_soft_cap`` only to tied logits).
* tied: the token embedding ``[V, D]`` rounded to bfloat16 (as MaxText's
  ``attend_on_embedding`` does) and transposed; ``normalize_embedding_logits``
  divides the hidden states by ``sqrt(D)``; ``final_logits_soft_cap`` is
  returned for the loss to apply.

Not supported (``NotImplementedError``; :func:`unsupported_reason` tells in
advance): a quantized or biased ``logits_dense``, host-offloaded parameters,
and vLLM attention. Multimodal side inputs are not run (the plugin's batches
are text only). The multi-token-prediction block (``mtp_num_layers > 0``) runs
exactly as ``Transformer.__call__`` runs it, on the decoder's raw hidden states,
and sows its losses for :mod:`sown`; it computes its own ``[B, S, V]`` logits
per MTP layer, so the lean path is lean for the main head only. With dropout on, the head's
dropout mask is drawn from the same stream but not necessarily equal to the
dense path's draw.
"""

from flax import nnx
import jax.numpy as jnp


def unsupported_reason(config) -> str | None:
  """Why :func:`forward_hidden` cannot serve a model built from ``config``, or None when it can.

  Config-only, so a trainer can choose the dense loss before tracing anything.
  """
  if config.attention in ("vllm_rpa", "vllm_batched_rpa"):
    return f"attention={config.attention!r} defers the output head to vLLM"
  if config.parameter_memory_host_offload:
    return "parameter_memory_host_offload=True keeps the output head on the host"
  if config.quantization and not config.logits_via_embedding:
    return f"quantization={config.quantization!r} may quantize logits_dense, which then has no plain [D, V] matrix"
  return None


def _check_supported(model: nnx.Module) -> None:
  reason = unsupported_reason(model.config)
  if reason is None and not model.config.logits_via_embedding:
    head = model.decoder.logits_dense
    if head.quant is not None or head.kernel_scale is not None or getattr(head, "bias", None) is not None:
      reason = "logits_dense is quantized or biased, so it has no plain [D, V] matrix"
  if reason is not None:
    raise NotImplementedError(f"The lean (chunked) distillation loss cannot run: {reason}. Use distill_loss_impl=dense.")


def forward_hidden(model: nnx.Module, batch: dict, *, enable_dropout: bool, model_mode: str | None = None):
  """Final hidden states and unembedding of ``model`` on ``batch``; no logits.

  Args:
    model: a MaxText 0.2.5 NNX ``Transformer`` (``model.decoder`` an
      ``NNXDecoder``, ``model.token_embedder`` its token embedding).
    batch: MaxText batch with ``inputs``, ``inputs_position`` and
      ``inputs_segmentation`` ``[B, S]`` (and ``targets``, ``targets_segmentation``
      for the MTP block).
    enable_dropout: as in :func:`forward.forward`.
    model_mode: MaxText's model mode, training's by default; ``"prefill"`` fills a decode-mode model's KV cache
      (the sampler's prefill, which needs the logits of one position per row, not ``[B, S, V]``). The MTP block
      runs in training mode only (it sows losses and changes nothing else).

  Returns:
    ``(hidden_BxSxD, unembed_DxV, softcap)``: the projection inputs, such that
    ``cap(hidden @ unembed)`` equals the model's logits, and the soft cap
    ``c`` (a Python float) or None. Gradients flow to the model's parameters
    through both arrays. Intermediates the decoder sows (the feature loss's
    ``out_projection_activations``, ``moe_lb_loss``, the MTP losses; ``hidden_states`` when
    ``num_vocab_tiling > 1``) stay on the model for
    :func:`sown.pop_sown`, as after :func:`forward.forward`.
  """
  from maxtext.common.common_types import MODEL_MODE_TRAIN, ShardMode  # pylint: disable=import-outside-toplevel
  from maxtext.utils.sharding import create_sharding  # pylint: disable=import-outside-toplevel

  _check_supported(model)
  cfg, decoder = model.config, model.decoder
  model_mode = model_mode or MODEL_MODE_TRAIN
  mtp = getattr(cfg, "mtp_num_layers", 0) > 0 and model_mode == MODEL_MODE_TRAIN
  embeddings = None
  if mtp and getattr(cfg, "mtp_reuse_input_embedding", False):
    # As Transformer.__call__: embed once, and let the MTP block shift these embeddings.
    embeddings = decoder.embed_tokens(model.token_embedder, batch["inputs"], MODEL_MODE_TRAIN)
  outputs = decoder(
      shared_embedding=model.token_embedder,
      decoder_input_tokens=batch["inputs"],
      decoder_input_embeddings=embeddings,
      decoder_positions=batch["inputs_position"],
      decoder_segment_ids=batch["inputs_segmentation"],
      deterministic=not enable_dropout,
      model_mode=model_mode,
  )
  raw_hidden = outputs[1]  # (logits or None, hidden before the final norm, kv caches[, expert indices])
  if mtp:
    model.mtp_block(
        shared_embedding=model.token_embedder,
        main_hidden_state=raw_hidden,
        input_ids=batch["inputs"],
        target_ids=batch["targets"],
        target_mask=batch["targets_segmentation"],
        position_ids=batch["inputs_position"],
        decoder_segment_ids=batch["inputs_segmentation"],
        deterministic=not enable_dropout,
        model_mode=MODEL_MODE_TRAIN,
        main_token_embeddings=embeddings,
    )
  norm_sharding = None
  if cfg.shard_mode == ShardMode.EXPLICIT:
    norm_sharding = create_sharding(decoder.mesh, ("activation_batch", "activation_length", "activation_embed"))
  hidden = decoder.decoder_norm(raw_hidden, out_sharding=norm_sharding)
  hidden = decoder.dropout(hidden, deterministic=not enable_dropout)

  if cfg.logits_via_embedding:
    unembed = jnp.asarray(model.token_embedder.embedding[...], jnp.bfloat16).T
    if cfg.normalize_embedding_logits:
      # Scaling the hidden states rather than the logits keeps the [B, S, V] division out of the loss.
      hidden = hidden / jnp.sqrt(jnp.asarray(hidden.shape[-1], hidden.dtype))
    softcap = float(cfg.final_logits_soft_cap) if cfg.final_logits_soft_cap else None
    return hidden, _gathered_on_embed(unembed), softcap
  head = decoder.logits_dense
  return jnp.asarray(hidden, head.dtype), _gathered_on_embed(jnp.asarray(head.kernel[...], head.dtype)), None


def _gathered_on_embed(unembed_DxV: jnp.ndarray) -> jnp.ndarray:
  """``unembed`` whole along D on every device (its vocabulary axis sharded as MaxText's ``vocab`` rule says).

  The lean loss slices this matrix tile by tile inside its loops. Left FSDP-sharded on D, the partitioner may
  gather each tile inside the loop (measured when compiling for a TPU topology: both unembeddings gathered in every
  sequence tile); constrained here, it is gathered once per step, as the dense head's matmul gathers it. Outside a
  mesh with logical axis rules this is the identity.
  """
  from flax import linen as nn  # pylint: disable=import-outside-toplevel

  return nn.with_logical_constraint(unembed_DxV, (None, "vocab"))
