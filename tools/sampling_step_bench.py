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

"""The cost of a sampled on-policy step against its parts, with the trainer's own programs (``bench_sampling.py``).

The student, the teacher (freshly initialised: no checkpoint is read) and the compiled train step are built as
``trainer.train`` builds them, from ``configs/distillation-cpu-tiny.yml`` at the benchmark's widths; one batch of
completion-only SFT rows (prompts of random lengths, then scored tokens) is trained on again and again. Timed, each
over ``steps`` back-to-back steps with one wait at the end (as the trainer runs between logging steps):

  plain     the train step on the dataset batch (what a lambda = 0 step costs)
  sampling  the on-policy sampling alone (``OnPolicy.batch_for_step`` with every step sampled)
  sampled   the trainer's on-policy step (``OnPolicy.run_step``, untimed): sampling, then the train step

and the overhead ``sampled / (plain + sampling)``: 1.0 when sampling and the step cost exactly their parts. EOS is
never sampled (eos_id -1), so every sample has exactly ``new_tokens`` tokens.
"""

import dataclasses
import inspect
import pathlib
import statistics
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _configs(args):
  from maxtext_distill_plugin.configuration import config as config_lib  # pylint: disable=import-outside-toplevel

  widths = {
      "base_emb_dim": args.emb,
      "base_num_query_heads": args.heads,
      "base_num_kv_heads": args.heads,
      "head_dim": args.emb // args.heads,
      "base_mlp_dim": 4 * args.emb,
      "vocab_size": args.vocab,
  }
  configs = config_lib.build(
      [
          "bench_sampling",
          str(REPO / "configs" / "distillation-cpu-tiny.yml"),
          "run_name=bench_sampling",
          "base_output_directory=/tmp/bench_sampling",
          "enable_checkpointing=False",
          *(f"{k}={v}" for k, v in widths.items()),
          *(f"teacher_overrides.{k}={v}" for k, v in widths.items()),
          f"per_device_batch_size={args.batch}",
          f"max_target_length={args.prompt_len + args.new_tokens}",
          f"student_overrides.base_num_decoder_layers={args.layers}",
          f"teacher_overrides.base_num_decoder_layers={args.teacher_layers}",
          "teacher_overrides.load_parameters_path=/bench/initialised/teacher",  # built fresh below, never read
          "distill_divergence=reverse_kl",
          f"distill_sample_max_new_tokens={args.new_tokens}",
          f"steps={10**6}",
      ],
      plan=True,
  )
  # Built at lambda 0 (the synthetic data has no prompts to check); every benchmark step samples.
  return dataclasses.replace(configs, settings=configs.settings.model_copy(update={"distill_on_policy_fraction": 1.0}))


def _sft_batch(template: dict, prompt_len: int, vocab: int, seed: int = 0) -> dict:
  """A completion-only SFT batch shaped like ``template``: row b's prompt is its first ``L_b`` tokens, the rest scored."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  rows, length = template["inputs"].shape
  rng = np.random.default_rng(seed)
  lengths = rng.integers(prompt_len // 2, prompt_len + 1, rows)
  positions = np.broadcast_to(np.arange(length), (rows, length))
  tokens = rng.integers(2, vocab, (rows, length))
  values = {
      "inputs": tokens,
      "targets": np.concatenate([tokens[:, 1:], np.zeros((rows, 1), tokens.dtype)], axis=1),
      "inputs_position": positions,
      "targets_position": positions,
      "inputs_segmentation": np.ones((rows, length)),
      "targets_segmentation": (positions >= lengths[:, None] - 1) & (positions < length - 1),
  }
  return {k: jax.device_put(np.asarray(values[k]).astype(v.dtype), v.sharding) for k, v in template.items()}


class StepBench:
  """The three timed loops over the trainer's own programs."""

  def __init__(self, args):
    from flax import nnx  # pylint: disable=import-outside-toplevel
    from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel
    from maxtext.utils import train_utils  # pylint: disable=import-outside-toplevel

    from maxtext_distill_plugin.training import on_policy  # pylint: disable=import-outside-toplevel
    from maxtext_distill_plugin.training import step as step_lib  # pylint: disable=import-outside-toplevel
    from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

    self.trainer, self.jax, self.steps = trainer, jax, args.steps
    configs = _configs(args)
    student = configs.student
    _, _, shardings, _, mesh, schedule, _, loader, _, _, state = train_utils.setup_train_loop(student, recorder=None)
    self.context = (jax.set_mesh(mesh), nn_partitioning.axis_rules(student.logical_axis_rules))
    for context in self.context:
      context.__enter__()
    state_graphdef, self.state = nnx.split(state)
    teacher_config = trainer._without_parameters_path(configs.teacher)  # pylint: disable=protected-access
    teacher_graphdef, self.teacher_state = nnx.split(model_creation_utils.from_pretrained(teacher_config, mesh=mesh))
    self.batch = _sft_batch(loader.load_next_batch(), args.prompt_len, args.vocab)
    options = trainer.step_options(configs, None)
    self.train_step = jax.jit(
        step_lib.make_train_step(state_graphdef, teacher_graphdef, options, schedule),
        donate_argnums=(0,),
        out_shardings=(shardings, None),
    )
    student_graphdef = nnx.graphdef(nnx.merge(state_graphdef, self.state).model)
    self.policy = on_policy.OnPolicy(configs, mesh, student_graphdef, teacher_graphdef, (-1, 0), state_graphdef)
    # Before this change batch_for_step timed (and waited) by default; the untimed call is what a run makes.
    untimed = "timed" in inspect.signature(self.policy.batch_for_step).parameters
    self._sample_kwargs = {"timed": False} if untimed else {}
    self.step = 0

  def plain(self):
    for _ in range(self.steps):
      self.state, metrics = self.train_step(self.state, self.teacher_state, self.batch)
    self.jax.block_until_ready((self.state, metrics))

  def sampling(self):
    # Each call waits: calls on one state are independent and would overlap, which no training step can do.
    for _ in range(self.steps):
      self.step += 1
      out = self.policy.batch_for_step(self.step, self.state, self.teacher_state, self.batch, **self._sample_kwargs)
      self.jax.block_until_ready(out)

  def sampled(self, timed: bool = False):
    for _ in range(self.steps):
      self.step += 1
      self.state, metrics = self.policy.run_step(
          self.train_step, self.step, self.state, self.teacher_state, self.batch, timed=timed
      )
    self.jax.block_until_ready((self.state, metrics))
    return metrics

  def measure(self, rounds: int) -> dict:
    """Seconds per step of each loop in each of ``rounds`` rounds (alternating order), after a warm-up."""
    runs = {"plain": self.plain, "sampling": self.sampling, "sampled": self.sampled}
    for run in runs.values():
      run()  # compile and warm up
    times = {name: [] for name in runs}
    for index in range(rounds):
      names = list(runs)[index % 3 :] + list(runs)[: index % 3]
      for name in names:
        started = time.perf_counter()
        runs[name]()
        times[name].append((time.perf_counter() - started) / self.steps)
    return times

  def logged_breakdown(self) -> dict:
    """The metrics a run logs at a timed sampled step (the step that ends a logging window): the second of two."""
    steps, self.steps = self.steps, 1
    for _ in range(2):
      metrics = self.sampled(timed=True)
    self.steps = steps
    keys = ("perf/sample_seconds", "perf/teacher_seconds", "perf/update_seconds", "perf/step_seconds")
    return {k: float(metrics[k][0]) / max(float(metrics[k][1]), 1.0) for k in keys if k in metrics}


def report(args) -> None:
  """Prints the step timings and the overhead ratio, by the median and by the best round (the best is the steadier
  figure on a machine that other work shares)."""
  bench = StepBench(args)
  times = bench.measure(args.rounds)
  breakdown = bench.logged_breakdown()
  print(
      f"on-policy step: student {args.layers} layers, teacher {args.teacher_layers}, emb {args.emb}, vocab"
      f" {args.vocab}; batch {args.batch}, prompt bucket {args.prompt_len}, {args.new_tokens} new tokens;"
      f" {args.steps} steps per timing, {args.rounds} rounds; ms per step (median / best)"
  )
  for name in ("plain", "sampling", "sampled"):
    print(f"  {name:10s} {statistics.median(times[name]) * 1e3:8.1f} / {min(times[name]) * 1e3:8.1f}")
  for label, pick in (("median", statistics.median), ("best", min)):
    ratio = pick(times["sampled"]) / (pick(times["plain"]) + pick(times["sampling"]))
    print(f"  overhead sampled / (plain + sampling), {label}: {ratio:.3f}")
  if breakdown:
    print("  logged at a timed step: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in breakdown.items()))
