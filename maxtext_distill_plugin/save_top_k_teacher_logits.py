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

"""Runs the teacher once and caches its top-k log-probabilities for offline distillation.

  python -m maxtext_distill_plugin.save_top_k_teacher_logits <config.yml> key=value ... \\
      offline_data_dir=<out> [distill_top_k=128] [--top-k N] [--steps-per-shard N] [--check-live N]

The teacher, the mesh and the batches come from the same YAML as training: the
teacher is ``configs.teacher`` (YAML + ``teacher_overrides``), the batches are
MaxText's input pipeline on the run's config, ``steps`` batches in all. Each host
writes its own shards; a rerun with the same arguments resumes after the last
complete shard (and a larger ``steps`` extends the cache). ``--check-live N``
(single process) recomputes N cached sequences with the live teacher at the end
and prints the error report.
"""

import dataclasses
import hashlib
import json
import os
import sys
import time

from absl import logging
import numpy as np

from maxtext_distill_plugin import errors
from maxtext_distill_plugin.teacher_cache import codec
from maxtext_distill_plugin.teacher_cache import format as cache_format

DEFAULT_TOP_K = 128
DEFAULT_STEPS_PER_SHARD = 50
_TOOL_KEYS = ("offline_data_dir", "distill_top_k")
_FLAGS = {"--top-k": "top_k", "--steps-per-shard": "steps_per_shard", "--check-live": "check_live"}
_DATASET_KEYS = (
    "dataset_type", "dataset_path", "dataset_name", "train_split", "grain_train_files", "hf_path", "hf_data_dir",
    "hf_train_files", "train_data_columns", "tokenize_train_data", "packing", "data_shuffle_seed", "add_bos", "add_eos",
    "global_batch_size_to_load",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ToolOptions:
  """The tool's own arguments (not MaxText keys)."""

  output_dir: str
  top_k: int | None = None  # None: the config's distill_top_k if it has one, else DEFAULT_TOP_K
  steps_per_shard: int = DEFAULT_STEPS_PER_SHARD
  check_live: int = 0


def split_arguments(argv: list[str]) -> tuple[list[str], ToolOptions]:
  """Separates the tool's own arguments from the training config's ``key=value`` pairs."""
  config_argv, values, i = [], {}, 0
  while i < len(argv):
    arg = argv[i]
    name, sep, value = arg.partition("=")
    if name in _FLAGS:
      if not sep:
        if i + 1 >= len(argv):
          raise errors.ConfigError(name, None, f"give it a value, e.g. {name} 16.")
        value, i = argv[i + 1], i + 1
      values[_FLAGS[name]] = value
    elif i >= 2 and name in _TOOL_KEYS and sep:
      values["output_dir" if name == "offline_data_dir" else "top_k"] = value
    else:
      config_argv.append(arg)
    i += 1
  if not values.get("output_dir"):
    raise errors.ConfigError("offline_data_dir", None, "name the output directory: offline_data_dir=/path/to/cache.")
  for key in ("top_k", "steps_per_shard", "check_live"):
    if key in values:
      try:
        values[key] = int(values[key])
      except ValueError as e:
        raise errors.ConfigError(key, values[key], "use a whole number.") from e
  options = ToolOptions(**values)
  if (options.top_k is not None and options.top_k < 1) or options.steps_per_shard < 1 or options.check_live < 0:
    raise errors.ConfigError("top_k/steps_per_shard", (options.top_k, options.steps_per_shard), "use positive values.")
  return config_argv, options


def resolve_top_k(options: ToolOptions, configs) -> ToolOptions:
  """The flag, else a ``distill_top_k`` setting (once the config section has one), else 128."""
  top_k = int(options.top_k or getattr(configs.settings, "distill_top_k", None) or DEFAULT_TOP_K)
  if top_k > configs.teacher.vocab_size:
    raise errors.ConfigError("top_k", top_k, f"use at most the vocabulary size {configs.teacher.vocab_size}.")
  return dataclasses.replace(options, top_k=top_k)


def _tokenizer_sha256(path: str) -> str:
  if not path or not os.path.isfile(path):
    return ""
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _json_safe(value):
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def cache_identity(configs, options: ToolOptions, process_count: int) -> cache_format.CacheIdentity:
  teacher, data = configs.teacher, configs.student
  return cache_format.CacheIdentity(
      teacher_model=str(teacher.model_name),
      teacher_checkpoint=str(teacher.load_parameters_path),
      tokenizer_path=str(data.tokenizer_path),
      tokenizer_sha256=_tokenizer_sha256(str(data.tokenizer_path)),
      vocab_size=int(teacher.vocab_size),
      top_k=options.top_k,
      max_target_length=int(teacher.max_target_length),
      rows_per_step=int(data.global_batch_size_to_load) // process_count,
      process_count=process_count,
      steps_per_shard=options.steps_per_shard,
      logprob_step=codec.DEFAULT_LOGPROB_STEP,
      tail_renyi_orders=_tail_renyi_orders(),
      dataset={key: _json_safe(getattr(data, key, None)) for key in _DATASET_KEYS},
  )


def _tail_renyi_orders() -> tuple:
  from maxtext_distill_plugin.loss import sparse_losses  # pylint: disable=import-outside-toplevel

  return tuple(sparse_losses.TAIL_RENYI_ORDERS)


def host_rows(array) -> np.ndarray:
  """This host's rows of a batch-sharded global array, in order."""
  if getattr(array, "is_fully_addressable", True):
    return np.asarray(array)
  by_start = {shard.index[0].start or 0: shard for shard in array.addressable_shards}
  return np.concatenate([np.asarray(by_start[start].data) for start in sorted(by_start)])


class TeacherRunner:
  """The frozen teacher with jitted top-k and full log-prob functions, under its mesh."""

  def __init__(self, configs, top_k: int):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from maxtext.utils import maxtext_utils  # pylint: disable=import-outside-toplevel

    from maxtext_distill_plugin.configuration.settings import DistillSettings  # pylint: disable=import-outside-toplevel
    from maxtext_distill_plugin.loss import sparse_tail  # pylint: disable=import-outside-toplevel
    from maxtext_distill_plugin.teachers import kinds  # pylint: disable=import-outside-toplevel
    from maxtext_distill_plugin.training import trainer  # pylint: disable=import-outside-toplevel

    self.configs, self.top_k = configs, top_k
    self.mesh = maxtext_utils.get_mesh_from_config(configs.teacher)
    with self._context():
      graphdef, self.state = trainer.build_teacher(configs.teacher, self.mesh)
    teacher = kinds.FrozenModel(graphdef, DistillSettings())  # no feature extraction: only the logits are cached

    def log_probs(state, batch):
      logits = teacher.head(state, batch, lean=False).logits_BxSxV
      return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

    def top_k_of(state, batch):
      logp = log_probs(state, batch)
      values, ids = jax.lax.top_k(logp, top_k)
      tail = jax.nn.logsumexp(jnp.put_along_axis(logp, ids, -jnp.inf, axis=-1, inplace=False), axis=-1)
      renyi = sparse_tail.tail_renyi_entropies(logp, ids)  # makes the tail bucket exact at T != 1
      ids, values = jax.lax.sort((ids, values), dimension=-1, num_keys=1)  # ascending ids: the codec skips its sort
      return ids, values, tail, renyi

    self._log_probs, self._top_k = jax.jit(log_probs), jax.jit(top_k_of)

  def _context(self):
    import contextlib  # pylint: disable=import-outside-toplevel

    import jax  # pylint: disable=import-outside-toplevel
    from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel

    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn_partitioning.axis_rules(self.configs.teacher.logical_axis_rules))
    return stack

  def top_k_async(self, batch):
    with self._context():
      return self._top_k(self.state, batch)

  def live_log_probs(self, record: dict) -> np.ndarray:
    """Full ``[S, V]`` log-probs for one cached record (tiled to the configured batch)."""
    rows = int(self.configs.student.global_batch_size_to_load)
    batch = {name: np.tile(record[name][None], (rows, 1)) for name in cache_format.TOKEN_FIELDS}
    with self._context():
      return np.asarray(self._log_probs(self.state, batch)[0])


def _write_batch(writer, step: int, batch: dict, outputs) -> int:
  ids, values, tail, renyi = (host_rows(x) for x in outputs)
  rows = {name: host_rows(batch[name]) for name in cache_format.TOKEN_FIELDS}
  rows.update(teacher_topk_ids=ids, teacher_topk_logprobs=values, teacher_tail_logmass=tail)
  rows[cache_format.TAIL_RENYI_FIELD] = renyi
  if step >= writer.next_step:  # A host that got further before a crash only recomputes.
    writer.write_step(step, rows)
  return int(np.count_nonzero(rows["targets_segmentation"]))


def generate(configs, options: ToolOptions) -> cache_format.Manifest:
  """Writes (or resumes) the cache of ``configs.student.steps`` batches; returns the final manifest."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  from maxtext.input_pipeline import input_pipeline_interface  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.teacher_cache import writer as cache_writer  # pylint: disable=import-outside-toplevel

  total_steps = int(configs.student.steps)
  identity = cache_identity(configs, options, jax.process_count())
  writer = cache_writer.HostShardWriter(
      options.output_dir, identity, process_index=jax.process_index(), total_steps=total_steps
  )
  start = int(np.min(multihost_utils.process_allgather(np.array(writer.next_step))))
  runner = TeacherRunner(configs, options.top_k)
  train_iterator, _ = input_pipeline_interface.create_data_iterator(configs.student, runner.mesh)
  for _ in range(min(start, total_steps)):  # Resume: the pipeline is deterministic; skip what is cached.
    next(train_iterator)
  logging.info("Caching teacher top-%d for steps [%d, %d) into %s", options.top_k, start, total_steps, options.output_dir)
  started, tokens, pending = time.perf_counter(), 0, None
  for step in range(start, total_steps):
    batch = next(train_iterator)
    outputs = runner.top_k_async(batch)  # dispatched; the previous batch is written meanwhile
    if pending is not None:
      tokens += _write_batch(writer, *pending)
    pending = (step, batch, outputs)
    done = step + 1 - start
    if done == 1:
      started = time.perf_counter()  # the rate excludes compilation
    elif done % max(1, (total_steps - start) // 20) == 0 or step + 1 == total_steps:
      elapsed = time.perf_counter() - started
      eta = elapsed / (done - 1) * (total_steps - step - 1)
      logging.info(
          "teacher cache: step %d/%d, %.0f tokens/s (this host), ETA %s",
          step + 1, total_steps, tokens / max(elapsed, 1e-9), time.strftime("%H:%M:%S", time.gmtime(eta)),
      )  # fmt: skip
  if pending is not None:
    tokens += _write_batch(writer, *pending)
  writer.close()
  multihost_utils.sync_global_devices("teacher_cache_written")
  manifest = cache_writer.write_manifest(options.output_dir, identity, total_steps) if jax.process_index() == 0 else None
  if options.check_live and jax.process_index() == 0:
    _check_live(options, runner)
  return manifest


def _check_live(options: ToolOptions, runner: TeacherRunner) -> None:
  import jax  # pylint: disable=import-outside-toplevel

  from maxtext_distill_plugin.teacher_cache import reader, verify  # pylint: disable=import-outside-toplevel

  if jax.process_count() > 1:
    logging.warning("--check-live runs on a single process only; skipped.")
    return
  report = verify.compare_with_live(reader.open_cache(options.output_dir), runner.live_log_probs, options.check_live)
  logging.info("live check: %s", json.dumps(report))
  print(f"live check: {json.dumps(report)}")


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  try:
    config_argv, options = split_arguments(argv)
    from maxtext_distill_plugin.configuration import config  # pylint: disable=import-outside-toplevel

    configs = config.build(config_argv + ["offline_data_dir="])
    options = resolve_top_k(options, configs)
  except (errors.ConfigError, ValueError) as e:
    print(f"save_top_k_teacher_logits: {e}", file=sys.stderr)
    return errors.EXIT_USAGE
  manifest = generate(configs, options)
  if manifest is not None:
    logging.info("Cache %s: %d sequences in %d shards", options.output_dir, manifest.records, len(manifest.shards))
  return 0


if __name__ == "__main__":
  sys.exit(main())
