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

"""Sampling throughput against MaxText's own ``MaxEngine`` decode, and a sampled step's cost against its parts.

    JAX_PLATFORMS=cpu python tools/bench_sampling.py [--what decode,step --batch 8 --prompt-len 32 --new-tokens 32 ...]

``--what step`` (:mod:`tools.sampling_step_bench`): the trainer's on-policy step against a plain step and the
sampling alone, reported as ``sampled / (plain + sampling)`` (the target is at most 1.1), and the breakdown a run
logs at a timed step. ``--what decode``, below:

One freshly initialised llama-style model (MaxText's default decoder at the given widths) and one batch of
right-padded prompts of random lengths. Both decoders run greedy, with no EOS, so both produce exactly
``batch * new_tokens`` tokens per run:

  ours       ``sampling.make_sampler``: one compiled program, batched prefill + ``while_loop`` over the
             autoregressive steps (``--decode recompute``: the full-recompute fallback instead)
  maxengine  MaxText 0.2.5's ``MaxEngine`` as ``maxtext.inference.decode`` drives it: ``prefill`` per prompt
             (batch 1), ``insert`` into its slot, then ``generate`` once per new token; the engine is given the
             same parameters (``load_params(params=...)``)

Each is compiled and warmed up by one untimed run; then ``--rounds`` rounds alternate the two (so machine load falls
on both alike). Reported: median new tokens per second of each, their ratio, and whether the greedy tokens agree.
"""

import argparse
import pathlib
import statistics
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(args):
  import maxtext  # pylint: disable=import-outside-toplevel
  from maxtext.configs import pyconfig  # pylint: disable=import-outside-toplevel

  base = str(pathlib.Path(maxtext.__file__).parent / "configs" / "base.yml")
  return pyconfig.initialize([
      "bench_sampling",
      base,
      "run_name=bench_sampling",
      "hardware=cpu",
      "skip_jax_distributed_system=True",
      "attention=dot_product",
      "dtype=float32",
      "weight_dtype=float32",
      "jax_cache_dir=",
      "override_model_config=True",
      "enable_checkpointing=False",
      f"base_emb_dim={args.emb}",
      f"base_num_query_heads={args.heads}",
      f"base_num_kv_heads={args.heads}",
      f"head_dim={args.emb // args.heads}",
      f"base_mlp_dim={4 * args.emb}",
      f"base_num_decoder_layers={args.layers}",
      f"vocab_size={args.vocab}",
      f"per_device_batch_size={args.batch}",
      f"max_prefill_predict_length={args.prompt_len}",
      f"max_target_length={args.prompt_len + args.new_tokens}",
      "decode_sampling_strategy=greedy",
  ])


def _make_result_tokens_a_pytree(maxengine) -> None:
  """Without JetStream installed, MaxText substitutes a plain-class ``ResultTokens`` stub that its jitted ``prefill``
  and ``generate`` cannot return; registering the stub as a pytree (arrays as leaves) lets the engine run. Benchmark
  only: no data or computation changes."""
  import jax  # pylint: disable=import-outside-toplevel

  cls = maxengine.engine_api.ResultTokens
  if getattr(maxengine.engine_api, "__name__", "").startswith("jetstream"):  # the real one is already a dataclass
    return

  def flatten(r):
    return (r.data, r.log_prob), (r.tokens_idx, r.valid_idx, r.length_idx, r.samples_per_slot)

  def unflatten(aux, children):
    tokens_idx, valid_idx, length_idx, samples_per_slot = aux
    return cls(
        data=children[0],
        log_prob=children[1],
        tokens_idx=tokens_idx,
        valid_idx=valid_idx,
        length_idx=length_idx,
        samples_per_slot=samples_per_slot,
    )

  try:
    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
  except ValueError:  # already registered
    pass


def _maxengine_decode(engine, params, prompts, lengths, new_tokens, rng):
  """MaxText's own loop: per-prompt prefill and insert, then one generate per token; tokens [B, N]."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  decode_state = engine.init_decode_state()
  firsts = []
  for slot, (prompt, length) in enumerate(zip(prompts, lengths)):
    rng, key = jax.random.split(rng)
    prefix, first = engine.prefill(params=params, padded_tokens=prompt, true_length=int(length), rng=key, slot=slot)
    decode_state = engine.insert(prefix, decode_state, slot=slot)
    firsts.append(first.data[0, 0])
  steps = []
  for _ in range(new_tokens - 1):
    rng, key = jax.random.split(rng)
    decode_state, result = engine.generate(params, decode_state, rng=key)
    steps.append(result.data[:, 0])
  jax.block_until_ready(steps)
  return np.stack([np.stack(firsts)] + [np.asarray(s) for s in steps], axis=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=32)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--emb", type=int, default=128)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--vocab", type=int, default=1024)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--decode", default="kv_cache", choices=("kv_cache", "recompute"), help="our sampler's path")
  parser.add_argument("--what", default="decode,step", help="decode (tokens/s against MaxEngine), step, or both")
  parser.add_argument("--teacher-layers", type=int, default=4, help="step: the teacher's depth")
  parser.add_argument("--steps", type=int, default=5, help="step: back-to-back steps per timing")
  args = parser.parse_args()
  what = set(args.what.split(","))
  if "decode" in what:
    _decode(args)
  if "step" in what:
    # This file's folder is first on sys.path; the plugin stays the one the environment (or PYTHONPATH) names.
    import sampling_step_bench  # pylint: disable=import-outside-toplevel

    sampling_step_bench.report(args)


def _decode(args):
  """Tokens per second of our sampler and of MaxEngine on one model, and whether their greedy tokens agree."""

  from flax import nnx  # pylint: disable=import-outside-toplevel
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from maxtext.inference.maxengine import maxengine  # pylint: disable=import-outside-toplevel
  from maxtext.utils import maxtext_utils, model_creation_utils  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.model import sampling  # pylint: disable=import-outside-toplevel

  config = _config(args)
  mesh = maxtext_utils.get_mesh_from_config(config)
  with jax.set_mesh(mesh), nn_partitioning.axis_rules(config.logical_axis_rules):
    graphdef, state = nnx.split(model_creation_utils.from_pretrained(config, mesh=mesh))
  rng = np.random.default_rng(0)
  lengths = rng.integers(args.prompt_len // 2, args.prompt_len + 1, args.batch).astype(np.int32)
  prompts = rng.integers(1, args.vocab, (args.batch, args.prompt_len)).astype(np.int32)
  prompts[np.arange(args.prompt_len)[None, :] >= lengths[:, None]] = 0

  options = sampling.SampleOptions(max_new_tokens=args.new_tokens, eos_id=-1, temperature=0.0)
  sampler = sampling.make_sampler(graphdef, config, options, args.prompt_len, args.batch, mesh=mesh, decode=args.decode)

  def ours():
    out = sampler(state, prompts, lengths, jax.random.key(0))
    tokens = np.asarray(out.tokens_BxS)
    return np.stack([tokens[b, n : n + args.new_tokens] for b, n in enumerate(lengths)])

  _make_result_tokens_a_pytree(maxengine)
  engine = maxengine.MaxEngine(config)
  engine_params = engine.load_params(params=nnx.state(nnx.merge(graphdef, state), nnx.Param))

  def theirs():
    return _maxengine_decode(engine, engine_params, prompts, lengths, args.new_tokens, jax.random.key(0))

  runs = {"ours": ours, "maxengine": theirs}
  tokens = {name: run() for name, run in runs.items()}  # compile + warm-up
  times = {name: [] for name in runs}
  for round_index in range(args.rounds):
    for name in list(runs)[round_index % 2 :] + list(runs)[: round_index % 2]:
      started = time.perf_counter()
      runs[name]()
      times[name].append(time.perf_counter() - started)
  new = args.batch * args.new_tokens
  rate = {name: new / statistics.median(t) for name, t in times.items()}
  print(
      f"model: emb {args.emb}, {args.layers} layers, vocab {args.vocab}; batch {args.batch}, prompt_len"
      f" {args.prompt_len} (lengths {lengths.min()}..{lengths.max()}), new_tokens {args.new_tokens}, greedy;"
      f" {jax.devices()[0].platform}, {args.rounds} rounds; ours decodes by {args.decode}"
  )
  for name in runs:
    print(f"  {name:10s} {rate[name]:10.1f} new tokens/s   (median {statistics.median(times[name]) * 1e3:.1f} ms/run)")
  print(f"  ratio ours / maxengine throughput: {rate['ours'] / rate['maxengine']:.2f}")
  agree = float((tokens["ours"] == tokens["maxengine"]).mean())
  print(f"  greedy tokens identical: {agree * 100:.1f}% of {new}")


if __name__ == "__main__":
  main()
