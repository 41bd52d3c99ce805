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

"""Lean and fast: our online distillation step against upstream MaxText's and against the floor.

    python tools/bench_distill.py --out docs/benchmarks.md [--quick]

For each shape (vocabulary x sequence length; tiny widths so it runs on a
laptop CPU) one YAML is written and one teacher checkpoint is made with
MaxText's own pre-training. Four variants then run on that same YAML, each in
its own process (so peak RSS is its own):

  ours_dense    the plugin's compiled step, ``distill_loss_impl=dense``
  ours_chunked  the plugin's compiled step, ``distill_loss_impl=chunked``
  upstream      MaxText 0.2.5's own train step as its Tunix trainer compiles it
                (through ``tools/upstream_compat.py``, a benchmark-only shim)
  floor         MaxText's own pre-training ``train_step`` for the student plus a
                teacher forward pass, in one jitted function: what any online
                distillation must at least do

Each worker builds its step, compiles it ahead of time (recording the compiled
program's ``memory_analysis()``), runs one warm-up step and waits. The parent
then runs rounds; in each round every variant, in a rotating order, runs a few
steps while the others sleep, so machine load falls on all variants alike.
Reported: median step times, per-round paired time ratios, XLA's temporary
memory of each compiled step and each process's peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss`` at exit), as a Markdown report and a plot
of temp memory against vocabulary size.

The parent imports neither JAX nor MaxText; ``--worker`` is the internal
entry of the worker processes.
"""

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import select
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from absl import logging

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "configs" / "distillation-cpu-tiny.yml"
VARIANTS = ("ours_dense", "ours_chunked", "upstream", "floor")
# Keys of the plugin's YAML that MaxText 0.2.5's own config refuses (upstream must read the same file).
PLUGIN_ONLY_YAML_KEYS = ("enable_nnx",)
MIB = 1 << 20


# --- Shapes and their YAML / teacher ---


@dataclasses.dataclass(frozen=True)
class Shape:
  """One benchmark configuration: model widths and the batch shape."""

  vocab: int
  seq: int
  batch: int = 1
  emb: int = 128
  heads: int = 4
  head_dim: int = 32
  mlp: int = 512
  teacher_layers: int = 2
  student_layers: int = 1

  @property
  def name(self) -> str:
    return f"v{self.vocab}_s{self.seq}_b{self.batch}_e{self.emb}"

  @property
  def model_key(self) -> str:
    """What the teacher checkpoint depends on (not the batch shape)."""
    return f"v{self.vocab}_e{self.emb}_h{self.heads}x{self.head_dim}_m{self.mlp}_l{self.teacher_layers}"

  def model_args(self) -> dict:
    return {
        "vocab_size": self.vocab,
        "base_emb_dim": self.emb,
        "base_num_query_heads": self.heads,
        "base_num_kv_heads": self.heads,
        "head_dim": self.head_dim,
        "base_mlp_dim": self.mlp,
    }


# All six combinations: about 12 min on 2 idle cores; vocab 131072, seq 1024 needs up to 20 GiB of RAM.
FULL_SHAPES = tuple(Shape(vocab=v, seq=s) for v in (1024, 32768, 131072) for s in (256, 1024))
# --quick: the model of tests/conftest.py (so its teacher checkpoint can be reused), compiled cheaply.
QUICK_SHAPE = Shape(vocab=512, seq=64, batch=2, emb=64, heads=4, head_dim=16, mlp=128)
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
CPU_ENV = {
    "hardware": "cpu",
    "skip_jax_distributed_system": True,
    "attention": "dot_product",
    "dtype": "float32",
    "weight_dtype": "float32",
    "jax_cache_dir": "",
    "override_model_config": True,
}


def maxtext_dir() -> pathlib.Path:
  import maxtext  # pylint: disable=import-outside-toplevel

  return pathlib.Path(maxtext.__file__).parent


def maxtext_base_yml() -> str:
  return str(maxtext_dir() / "configs" / "base.yml")


def child_env(xla_flags: str = "") -> dict:
  """Children import this checkout's plugin, not a copy installed in site-packages."""
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), xla_flags]))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  env.pop("MAXTEXT_DISTILL_USE_UPSTREAM", None)
  return env


def make_teacher(shape: Shape, work_dir: pathlib.Path) -> str:
  """Items dir of a teacher made by MaxText's own pre-training (one step); cached per model shape."""
  out = work_dir / "teachers" / shape.model_key
  items = out / "teacher" / "checkpoints" / "0" / "items"
  if items.is_dir():
    return str(items)
  args = {**CPU_ENV, **shape.model_args(), "base_num_decoder_layers": shape.teacher_layers}
  args.update(dataset_type="synthetic", max_target_length=16, per_device_batch_size=1, steps=1)
  args.update(enable_checkpointing=True, async_checkpointing=False, run_name="teacher", base_output_directory=str(out))
  cmd = [sys.executable, "-m", "maxtext.trainers.pre_train.train", maxtext_base_yml()]
  cmd += [f"{k}={v}" for k, v in args.items()]
  logging.info("Making teacher %s with MaxText pre-training", shape.model_key)
  out.mkdir(parents=True, exist_ok=True)
  with open(out / "pretrain.log", "w", encoding="utf-8") as log:
    proc = subprocess.run(cmd, cwd=out, env=child_env(), stdout=log, stderr=subprocess.STDOUT, check=False)
  if proc.returncode != 0 or not items.is_dir():
    raise RuntimeError(f"teacher pre-training failed (exit {proc.returncode}); see {out / 'pretrain.log'}")
  return str(items)


def write_yaml(shape: Shape, teacher_items: str, path: pathlib.Path) -> pathlib.Path:
  """The shared YAML: configs/distillation-cpu-tiny.yml resized to ``shape``, readable by both trainers."""
  import yaml  # pylint: disable=import-outside-toplevel

  with open(TINY_YAML, encoding="utf-8") as f:
    data = yaml.safe_load(f)
  for key in PLUGIN_ONLY_YAML_KEYS:
    data.pop(key, None)
  data.update(shape.model_args())
  data.update(
      base_num_decoder_layers=shape.teacher_layers,
      student_overrides={"base_num_decoder_layers": shape.student_layers},
      teacher_overrides={"base_num_decoder_layers": shape.teacher_layers, "load_parameters_path": teacher_items},
      max_target_length=shape.seq,
      per_device_batch_size=shape.batch,
      # MaxText 0.2.5's default resolves to a source-tree path absent from the wheel; upstream loads it for pad_id.
      tokenizer_path=str(maxtext_dir() / "assets" / "tokenizers" / "tokenizer.llama2"),
      # T != 1 keeps the temperature path honest in both trainers (at T = 1 XLA may merge the two softmaxes).
      distill_alpha=0.5,
      distill_temperature=2.0,
      distill_beta=0.0,
      enable_checkpointing=False,
      steps=1000,
      log_period=1000,
      eval_interval=-1,
  )
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"# Written by tools/bench_distill.py for shape {shape.name}; read by every variant.\n")
    yaml.safe_dump(data, f, sort_keys=False)
  return path


# --- Worker side: build one variant's compiled step, then obey the parent ---


@dataclasses.dataclass
class StepBench:
  """A compiled training step ready to time, with what XLA says about it."""

  run: object  # () -> None: one step, blocking until its outputs are ready
  compiled: object  # jax / nnx Compiled, for memory_analysis()
  compile_s: float
  keep_alive: object = None  # contexts that must outlive the timing


def _compile(jitted, *args):
  started = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - started


def _student_setup(student_config):
  """MaxText's own train setup for the student, as the plugin's trainer calls it."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from maxtext.utils import train_utils  # pylint: disable=import-outside-toplevel

  _, _, state_shardings, _, mesh, lr_schedule, _, data_loader, _, _, state = train_utils.setup_train_loop(
      student_config, recorder=None
  )
  graphdef, state = nnx.split(state)
  return graphdef, state, state_shardings, mesh, lr_schedule, data_loader.load_next_batch()


def _mesh_context(mesh, config) -> contextlib.ExitStack:
  import jax  # pylint: disable=import-outside-toplevel
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel

  stack = contextlib.ExitStack()
  stack.enter_context(jax.set_mesh(mesh))
  stack.enter_context(nn_partitioning.axis_rules(config.logical_axis_rules))
  return stack


def _stepping(compiled, state, *inputs):
  """``run()`` that feeds the donated state back in, as a training loop does."""
  import jax  # pylint: disable=import-outside-toplevel

  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], *inputs)
    jax.block_until_ready((holder[0], metrics))

  return run


def build_ours(argv: list[str], impl: str) -> StepBench:
  """The plugin's compiled step, built as ``trainer.train`` builds it."""
  import jax  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import config as config_lib  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import step as step_lib  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import trainer as trainer_lib  # pylint: disable=import-outside-toplevel

  configs = config_lib.build(argv + [f"distill_loss_impl={impl}"])
  student = configs.student
  graphdef, state, state_shardings, mesh, lr_schedule, batch = _student_setup(student)
  stack = _mesh_context(mesh, student)
  teacher_graphdef, teacher_state = trainer_lib.build_teacher(configs.teacher, mesh)
  options = step_lib.StepOptions(
      settings=configs.settings,
      total_steps=int(student.steps),
      accumulation_steps=int(student.gradient_accumulation_steps),
      clip_threshold=float(student.gradient_clipping_threshold),
      enable_dropout=bool(student.enable_dropout),
      chunked_loss=step_lib.use_chunked_loss(configs.settings, student, configs.teacher),
  )
  if options.chunked_loss != (impl == "chunked"):
    raise RuntimeError(f"distill_loss_impl={impl} resolved to chunked_loss={options.chunked_loss}")
  jitted = jax.jit(
      step_lib.make_train_step(graphdef, teacher_graphdef, options, lr_schedule),
      donate_argnums=(0,),
      out_shardings=(state_shardings, None),
  )
  compiled, compile_s = _compile(jitted, state, teacher_state, batch)
  return StepBench(_stepping(compiled, state, teacher_state, batch), compiled, compile_s, stack)


def build_floor(argv: list[str]) -> StepBench:
  """MaxText's pre-training ``train_step`` (student, plain CE, optimizer update) plus a teacher forward pass."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from maxtext.trainers.pre_train import train as pretrain  # pylint: disable=import-outside-toplevel
  from maxtext.utils import model_creation_utils  # pylint: disable=import-outside-toplevel
  from maxtext.utils import sharding  # pylint: disable=import-outside-toplevel
  from maxtext_distill_plugin import config as config_lib  # pylint: disable=import-outside-toplevel

  configs = config_lib.build(argv)  # only for the two MaxText configs of the shared YAML
  student = configs.student
  graphdef, state, state_shardings, mesh, _, batch = _student_setup(student)
  params_shardings, state_shardings = sharding.maybe_update_params_sharding_with_opt(student, state_shardings)
  stack = _mesh_context(mesh, student)
  teacher_graphdef, teacher_state = nnx.split(model_creation_utils.from_pretrained(configs.teacher, mesh=mesh))

  def floor_step(state, teacher_state, batch):
    teacher = nnx.merge(teacher_graphdef, teacher_state)
    teacher_logits = teacher(
        decoder_input_tokens=batch["inputs"],
        decoder_positions=batch["inputs_position"],
        decoder_segment_ids=batch["inputs_segmentation"],
        enable_dropout=False,
    )
    new_state, metrics = pretrain.train_step(graphdef, student, state_shardings, params_shardings, state, dict(batch))
    # One cheap reduction keeps the teacher's whole forward, logits included, in the program.
    metrics["scalar"]["teacher/max_logit"] = jnp.max(teacher_logits)
    return new_state, metrics

  jitted = jax.jit(floor_step, donate_argnums=(0,), out_shardings=(state_shardings, None))
  compiled, compile_s = _compile(jitted, state, teacher_state, batch)
  return StepBench(_stepping(compiled, state, teacher_state, batch), compiled, compile_s, stack)


def upstream_bench(step) -> StepBench:
  """Upstream's step as Tunix calls it; memory from lowering the same ``nnx.jit``."""
  import jax  # pylint: disable=import-outside-toplevel

  started = time.perf_counter()
  compiled = step.lower().compile()
  compile_s = time.perf_counter() - started
  return StepBench(lambda: jax.block_until_ready(step.run()), compiled, compile_s)


class WorkerChannel:
  """JSON lines to the parent on the original stdout; everything else printed goes to stderr."""

  def __init__(self):
    sys.stdout.flush()
    self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

  def send(self, **message) -> None:
    self._out.write(json.dumps(message) + "\n")
    self._out.flush()

  @staticmethod
  def receive() -> list[str]:
    line = sys.stdin.readline()
    return line.split() if line else ["quit"]


def compiled_stats(compiled) -> dict:
  """XLA's buffer sizes of the compiled step: ``temp_bytes`` (scratch), ``argument_bytes``, ``output_bytes``..."""
  memory = compiled.memory_analysis()
  return {f"{k}_bytes": int(getattr(memory, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output", "alias")}


def serve(channel: WorkerChannel, bench: StepBench) -> None:
  """Warm up, report, then run steps on request until told to quit."""
  import resource  # pylint: disable=import-outside-toplevel

  started = time.perf_counter()
  bench.run()
  first_step_s = time.perf_counter() - started
  channel.send(ready=True, compile_s=bench.compile_s, first_step_s=first_step_s, **compiled_stats(bench.compiled))
  while True:
    command = channel.receive()
    if command[0] == "run":
      times = []
      for _ in range(int(command[1])):
        started = time.perf_counter()
        bench.run()
        times.append(time.perf_counter() - started)
      channel.send(times=times)
    else:
      channel.send(maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
      return


def worker_main(args) -> int:
  """Entry of a worker process (``--worker VARIANT``)."""
  channel = WorkerChannel()
  logging.use_absl_handler()
  logging.set_verbosity(logging.WARNING)
  argv = ["train_distill", args.yaml, f"run_name={args.worker}", f"base_output_directory={args.run_dir}"]
  argv += args.set or []
  try:
    if args.worker == "upstream":
      import upstream_compat  # pylint: disable=import-outside-toplevel

      upstream_compat.serve_upstream_step(argv, lambda step: serve(channel, upstream_bench(step)))
    elif args.worker == "floor":
      serve(channel, build_floor(argv))
    else:
      serve(channel, build_ours(argv, args.worker.removeprefix("ours_")))
  except Exception as e:  # pylint: disable=broad-exception-caught
    logging.exception("worker %s failed", args.worker)
    channel.send(error=f"{type(e).__name__}: {e}"[:2000])
    return 1
  return 0


# --- Parent side: start workers, interleave rounds, collect ---


class Worker:
  """A worker process and its line protocol."""

  def __init__(self, variant: str, yaml_path: pathlib.Path, run_dir: pathlib.Path, extra: list[str], xla_flags=""):
    self.variant = variant
    self.log_path = run_dir / f"{variant}.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", variant, "--yaml", str(yaml_path)]
    cmd += ["--run-dir", str(run_dir)] + [f"--set={kv}" for kv in extra]
    self._log = open(self.log_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        cmd, cwd=REPO, env=child_env(xla_flags), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
    )
    self._buffer = b""
    self._started = time.perf_counter()
    self.ready: dict | None = None
    self.error: str | None = None
    self.rounds: list[list[float]] = []  # step times, one list per round
    self.maxrss_kib: int | None = None

  def receive(self, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    fd = self.proc.stdout.fileno()
    while b"\n" not in self._buffer:
      left = deadline - time.monotonic()
      if left <= 0:
        raise TimeoutError(f"{self.variant}: no answer in {timeout_s:.0f}s (log: {self.log_path})")
      if select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
          raise EOFError(f"{self.variant} exited with {self.proc.wait()} (log: {self.log_path})")
        self._buffer += chunk
    line, self._buffer = self._buffer.split(b"\n", 1)
    message = json.loads(line)
    if "error" in message:
      raise RuntimeError(f"{self.variant}: {message['error']} (log: {self.log_path})")
    return message

  def request(self, command: str, timeout_s: float) -> dict | None:
    """Sends ``command`` and returns the answer; on any failure records it, stops the worker, returns None."""
    if self.error:
      return None
    try:
      if command:
        self.proc.stdin.write((command + "\n").encode())
        self.proc.stdin.flush()
      return self.receive(timeout_s)
    except (RuntimeError, EOFError, TimeoutError, OSError) as e:
      logging.error("%s", e)
      self.error = str(e)
      self.stop()
      return None

  def wait_ready(self, timeout_s: float) -> None:
    self.ready = self.request("", timeout_s)
    if self.ready:
      self.ready["start_to_ready_s"] = time.perf_counter() - self._started

  def run_round(self, count: int, timeout_s: float) -> None:
    answer = self.request(f"run {count}", timeout_s)
    if answer:
      self.rounds.append(answer["times"])

  def finish(self, timeout_s: float = 120) -> None:
    answer = self.request("quit", timeout_s)
    self.maxrss_kib = answer["maxrss_kib"] if answer else None
    self.stop()

  def stop(self) -> None:
    if self.proc.poll() is None:
      with contextlib.suppress(OSError):
        self.proc.stdin.close()
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    self._log.close()

  def result(self) -> dict:
    times = [t for r in self.rounds for t in r]
    ok = bool(times) and not self.error
    out = {"variant": self.variant, "error": self.error, "log": str(self.log_path), "maxrss_kib": self.maxrss_kib}
    out["exit_code"] = self.proc.returncode
    out.update({k: v for k, v in (self.ready or {}).items() if k != "ready"})
    out.update(round_times_s=self.rounds, median_step_s=statistics.median(times) if ok else None)
    out["min_step_s"] = min(times) if ok else None
    return out


@dataclasses.dataclass(frozen=True)
class Plan:
  """How long and how much to measure."""

  rounds: int
  round_target_s: float = 1.0  # each variant runs about this long per round (at least one step)
  max_steps_per_round: int = 10
  parallel_starts: int = 4  # workers set up at once (setup is not timed)
  ready_timeout_s: float = 1800
  step_timeout_s: float = 600
  xla_flags: str = ""  # for the workers; --quick trades code quality for compile time (its timings mean nothing)


def start_workers(yaml_path, run_dir, extra: dict, plan: Plan) -> list[Worker]:
  """Starts the workers ``plan.parallel_starts`` at a time; each is compiled and warmed up on return."""
  workers: list[Worker] = []
  for first in range(0, len(VARIANTS), plan.parallel_starts):
    names = VARIANTS[first : first + plan.parallel_starts]
    batch = [Worker(v, yaml_path, run_dir, extra.get(v, []), plan.xla_flags) for v in names]
    for worker in batch:
      worker.wait_ready(plan.ready_timeout_s)
    workers += batch
  return workers


def steps_for_round(worker: Worker, plan: Plan) -> int:
  times = [t for r in worker.rounds for t in r]
  estimate = statistics.median(times) if times else (worker.ready or {}).get("first_step_s", 1.0)
  return max(1, min(plan.max_steps_per_round, int(plan.round_target_s / max(estimate, 1e-6))))


def measure_shape(shape: Shape, work_dir: pathlib.Path, plan: Plan, extra: dict, teacher=None) -> dict:
  """All variants on one shape: compile, interleaved rounds (rotating order), peak RSS."""
  started = time.perf_counter()
  teacher = teacher or make_teacher(shape, work_dir)
  yaml_path = write_yaml(shape, teacher, work_dir / "configs" / f"{shape.name}.yml")
  logging.info("Shape %s: starting %s", shape.name, ", ".join(VARIANTS))
  workers = start_workers(yaml_path, work_dir / "runs" / shape.name, extra, plan)
  try:
    for index in range(plan.rounds):
      for worker in workers[index % len(workers) :] + workers[: index % len(workers)]:
        worker.run_round(steps_for_round(worker, plan), plan.step_timeout_s)
  finally:
    for worker in workers:
      worker.finish()
  results = {w.variant: w.result() for w in workers}
  elapsed = time.perf_counter() - started
  brief = " ".join(f"{v}={_fmt(r['median_step_s'], '.3f')}s" for v, r in results.items())
  logging.info("Shape %s done in %.0fs: %s", shape.name, elapsed, brief)
  return {"shape": dataclasses.asdict(shape), "name": shape.name, "yaml": str(yaml_path), "wall_s": elapsed, **results}


# --- Report ---

TIME_VS_UPSTREAM = 0.8
TIME_VS_FLOOR = 1.10
TEMP_VS_UPSTREAM = 0.25
# The plugin's distill_loss_impl=auto picks chunked from this many student logits per micro-batch (step.py).
AUTO_CHUNKED_MIN_LOGITS = 1 << 26


def ratio(numerator, denominator):
  return None if numerator is None or not denominator else numerator / denominator


def _fmt(value, spec: str) -> str:
  return "n/a" if value is None or not math.isfinite(value) else f"{value:{spec}}"


def _get(row: dict, variant: str, key: str):
  r = row.get(variant) or {}
  return None if r.get("error") else r.get(key)


def _mib(row: dict, variant: str, key: str = "temp_bytes"):
  value = _get(row, variant, key)
  return None if value is None else value / (MIB if key.endswith("bytes") else 1024)


def paired_ratio(row: dict, numerator: str, denominator: str):
  """``(median, low, high)`` over rounds of (round median of one variant) / (round median of the other).

  Both ran back to back within each round, so a drift in machine load cancels in the ratio.
  """
  rounds_a, rounds_b = _get(row, numerator, "round_times_s"), _get(row, denominator, "round_times_s")
  if not rounds_a or not rounds_b:
    return None
  ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(rounds_a, rounds_b) if a and b]
  return (statistics.median(ratios), min(ratios), max(ratios)) if ratios else None


def _ratio_cell(value) -> str:
  return "n/a" if value is None else f"{value[0]:.2f} ({value[1]:.2f}-{value[2]:.2f})"


_TIME_RATIOS = (("ours_dense", "upstream"), ("ours_chunked", "upstream"), ("ours_dense", "floor"))
_TIME_RATIOS += (("ours_chunked", "floor"), ("floor", "upstream"))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
  return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _shape_cells(row: dict) -> list[str]:
  return [str(row["shape"]["vocab"]), str(row["shape"]["seq"])]


def time_table(rows: list[dict]) -> list[str]:
  header = ["vocab", "seq"] + [f"{v} (s)" for v in VARIANTS] + [f"{a}/{b}" for a, b in _TIME_RATIOS]
  body = [
      _shape_cells(row)
      + [_fmt(_get(row, v, "median_step_s"), ".3f") for v in VARIANTS]
      + [_ratio_cell(paired_ratio(row, a, b)) for a, b in _TIME_RATIOS]
      for row in rows
  ]
  return _table(header, body)


def memory_table(rows: list[dict]) -> list[str]:
  header = ["vocab", "seq"] + [f"temp MiB {v}" for v in VARIANTS] + ["chunked/upstream", "dense/upstream"]
  header += [f"peak RSS MiB {v}" for v in VARIANTS]
  body = []
  for row in rows:
    temp = {v: _mib(row, v) for v in VARIANTS}
    cells = _shape_cells(row) + [_fmt(temp[v], ".1f") for v in VARIANTS]
    cells += [_fmt(ratio(temp[v], temp["upstream"]), ".3f") for v in ("ours_chunked", "ours_dense")]
    body.append(cells + [_fmt(_mib(row, v, "maxrss_kib"), ".0f") for v in VARIANTS])
  return _table(header, body)


def setup_table(rows: list[dict]) -> list[str]:
  header = ["vocab", "seq"] + [f"compile s {v}" for v in VARIANTS] + [f"fastest step s {v}" for v in VARIANTS]
  body = [
      _shape_cells(row)
      + [_fmt(_get(row, v, "compile_s"), ".1f") for v in VARIANTS]
      + [_fmt(_get(row, v, "min_step_s"), ".3f") for v in VARIANTS]
      for row in rows
  ]
  return _table(header, body)


def failures(rows: list[dict]) -> list[str]:
  return [f"- {row['name']} / {v}: {row[v]['error']}" for row in rows for v in VARIANTS if row[v].get("error")]


def _verdict(value, limit: float) -> str:
  if value is None:
    return "not measured"
  met = value <= limit
  return f"**{'met' if met else 'missed'}** {value:.3f} ({'margin' if met else 'over by'} {abs(value / limit - 1):.1%})"


def _is_anchor(row: dict) -> bool:
  return row["shape"]["vocab"] == 32768 and row["shape"]["seq"] == 1024


def target_lines(rows: list[dict]) -> list[str]:
  """A verdict per target and shape (the memory target is stated at vocab 32k, seq 1024)."""
  anchor = [r for r in rows if _is_anchor(r)]
  if anchor:
    value = ratio(_mib(anchor[0], "ours_chunked"), _mib(anchor[0], "upstream"))
    lines = [f"- Compiled temp memory, ours / upstream ≤ {TEMP_VS_UPSTREAM} at vocab 32k, seq 1024: chunked"]
    lines[0] += f" {_verdict(value, TEMP_VS_UPSTREAM)}; dense"
    lines[0] += f" {_verdict(ratio(_mib(anchor[0], 'ours_dense'), _mib(anchor[0], 'upstream')), TEMP_VS_UPSTREAM)}."
  else:
    lines = ["- Compiled temp memory at vocab 32k, seq 1024: that shape was not run."]
  trend = ", ".join(
      f"{r['shape']['vocab']}/{r['shape']['seq']} {_fmt(ratio(_mib(r, 'ours_chunked'), _mib(r, 'upstream')), '.2f')}"
      for r in rows
  )
  lines.append(f"  Chunked / upstream temp memory at every vocab/seq: {trend}.")
  for label, other, limit in (("upstream", "upstream", TIME_VS_UPSTREAM), ("the floor", "floor", TIME_VS_FLOOR)):
    lines.append(f"- Step time, ours / {label} ≤ {limit} (median of per-round ratios):")
    for row in rows:
      parts = [
          f"{impl.removeprefix('ours_')} {_verdict((paired_ratio(row, impl, other) or [None])[0], limit)}"
          for impl in ("ours_dense", "ours_chunked")
      ]
      best = (paired_ratio(row, "floor", "upstream") or [None])[0]
      if other == "upstream" and best is not None and best > limit:
        parts.append(f"unreachable here: even the floor takes {best:.2f}x upstream's time")
      lines.append(f"  - vocab {row['shape']['vocab']}, seq {row['shape']['seq']}: " + "; ".join(parts))
  return lines


def _bsv_mib(shape: dict) -> float:
  return shape["batch"] * shape["seq"] * shape["vocab"] * 4 / MIB


def _range(values: list[float]) -> str:
  return "n/a" if not values else f"{min(values):.2f}x" if len(values) == 1 else f"{min(values):.2f}-{max(values):.2f}x"


def _span(rows: list[dict], numerator: str, denominator: str) -> str:
  return _range([p[0] for p in (paired_ratio(r, numerator, denominator) for r in rows) if p])


def _span_sentence(rows: list[dict]) -> str:
  large = [r for r in rows if r["shape"]["vocab"] >= 32768]
  if not large:
    return ""
  return (
      f" At vocab >= 32k, chunked took {_span(large, 'ours_chunked', 'floor')} the floor's time and"
      f" {_span(large, 'ours_chunked', 'upstream')} upstream's; dense took {_span(large, 'ours_dense', 'floor')} the"
      " floor's. Its logit gradient combines six `[B, S, V]` arrays (both models' softmaxes at T and at 1, the"
      " scatter of the CE gather, the mask), and XLA writes it transposed for the head's weight-gradient matmul:"
      " one cache-hostile pass that the floor makes over fewer inputs."
  )


def analysis_lines(rows: list[dict]) -> list[str]:
  """The 'why' behind the tables, with this run's numbers."""
  if not rows:
    return []
  row = ([r for r in rows if _is_anchor(r)] or [max(rows, key=lambda r: _bsv_mib(r["shape"]))])[0]
  shape, bsv = row["shape"], _bsv_mib(row["shape"])
  units = {v: _fmt(ratio(_mib(row, v), bsv), ".1f") for v in VARIANTS}
  tile = shape["batch"] * min(128, shape["seq"]) * shape["vocab"] * 4 / MIB
  lines = [
      (
          f"- **Memory.** At vocab {shape['vocab']}, seq {shape['seq']}, in units of one float32 `[B, S, V]` array"
          f" ({bsv:.3g} MiB), the compiled temp memory is: upstream {units['upstream']}, ours dense"
          f" {units['ours_dense']}, floor {units['floor']}, ours chunked {units['ours_chunked']}. Upstream's strategy"
          " keeps the student's and the teacher's logits, the student's log-softmax at T and at 1, the teacher's"
          " probabilities at T and at 1 and one-hot labels, all `[B, S, V]` float32, plus their gradients; our dense"
          " path keeps log-probabilities instead of one-hots and probabilities, so fewer arrays of the same kind. The"
          " floor (MaxText's own CE) keeps the logits, a one-hot and the gradient. The chunked path allocates no"
          f" `[B, S, V]` array at all: its vocabulary-sized buffers are `[B, distill_seq_chunk=128, V]` tiles ({tile:.3g}"
          f" MiB here; its whole temp is {_fmt(ratio(_mib(row, 'ours_chunked'), tile), '.0f')} tiles' worth, the two"
          " models' activations included). Its memory therefore grows with V at 128/S of the dense slope, and the gap"
          " to upstream grows with V; `distill_vocab_chunk` would shrink the tiles further."
      ),
      "- **Time.** All four variants run the same decoder layers, so the differences come from the output head and"
      " the loss. Upstream, ours dense and the floor run the `[B, S, D] x [D, V]` head matmul 4 times per step"
      " (teacher forward, student forward, two gradient matmuls); ours chunked runs it 6 times (its backward"
      " recomputes both models' logits tile by tile) but never writes or re-reads a `[B, S, V]` array. The dense"
      " variants make many passes over such arrays in memory (4 log-softmaxes, 2 KL terms, CE gathers, the softmax"
      f" gradients; MaxText's CE in the floor: softmax, one-hot, gradient). With emb {shape['emb']} a logit costs few"
      " FLOPs, so"
      " on this CPU the memory passes weigh more than the extra matmuls once `[B, S, V]` outgrows the caches."
      + _span_sentence(rows),
  ]
  unreachable = [r for r in rows if ((paired_ratio(r, "floor", "upstream") or [0])[0]) > TIME_VS_UPSTREAM]
  if unreachable:
    where = " and ".join(f"{r['shape']['vocab']}/{r['shape']['seq']}" for r in unreachable)
    lines.append(
        f"- At vocab/seq {where} the floor itself takes more than {TIME_VS_UPSTREAM}x upstream's time: the loss is a"
        " small share of the step at this vocabulary (the decoder layers dominate), so no loss implementation"
        f" can reach {TIME_VS_UPSTREAM}x there."
    )
  return lines + _auto_lines(rows)


def _auto_lines(rows: list[dict]) -> list[str]:
  """Where the plugin's default (``auto``) picks dense although chunked measured faster and leaner."""
  picked = [r for r in rows if r["shape"]["batch"] * r["shape"]["seq"] * r["shape"]["vocab"] < AUTO_CHUNKED_MIN_LOGITS]
  time = [(paired_ratio(r, "ours_chunked", "ours_dense") or [None])[0] for r in picked]
  temp = [ratio(_mib(r, "ours_chunked"), _mib(r, "ours_dense")) for r in picked]
  if not picked or None in time or None in temp or max(time) >= 1:
    return []
  where = ", ".join(f"{r['shape']['vocab']}/{r['shape']['seq']}" for r in picked)
  return [
      f"- **Default.** `distill_loss_impl=auto` picks dense below {AUTO_CHUNKED_MIN_LOGITS / 2**20:g} Mi student"
      f" logits per micro-batch, so at vocab/seq {where}; yet chunked took {_range(time)} dense's time and"
      f" {_range(temp)} its temp memory there. The targets above are met by `distill_loss_impl=chunked`, not by"
      " the default."
  ]


def environment() -> dict:
  """Versions (from package metadata: the parent never imports JAX) and the machine."""
  versions = {}
  for package in ("jax", "jaxlib", "flax", "optax", "maxtext", "google-tunix"):
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      versions[package] = importlib.metadata.version(package)
  cpu = platform.processor() or platform.machine()
  with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
    names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
  memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
  return {
      "python": platform.python_version(),
      "versions": versions,
      "cpu": cpu,
      "cores": os.cpu_count(),
      "memory_gib": round(memory_gib, 1),
      "load_average_at_start": os.getloadavg(),
  }


def _setup_minutes(rows: list[dict]) -> float:
  return sum(max((row[v].get("start_to_ready_s") or 0) for v in VARIANTS) for row in rows) / 60


def _context_lines(report: dict) -> list[str]:
  env, plan = report["environment"], report["plan"]
  shape = report["rows"][0]["shape"] if report["rows"] else {}
  versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
  load = ", ".join(f"{x:.1f}" for x in env.get("load_average_at_start", []))
  return [
      (
          f"Run {report['date']} on {env['cpu']} ({env['cores']} cores, {env['memory_gib']} GiB; load average {load} at"
          f" start; the machine is shared with other jobs), Python {env['python']}, {versions}. Total wall time"
          f" {report['wall_s'] / 60:.1f} min, of which {_setup_minutes(report['rows']):.1f} min starting workers"
          " (imports, model init, teacher restore, compile)."
      ),
      "",
      "## Setup",
      "",
      (
          f"- Models: MaxText's default decoder shrunk to emb {shape.get('emb')}, {shape.get('heads')} heads x"
          f" {shape.get('head_dim')}, MLP {shape.get('mlp')}, float32; teacher {shape.get('teacher_layers')} layers (a"
          f" checkpoint from one step of MaxText pre-training), student {shape.get('student_layers')} layer; per-device"
          f" batch {shape.get('batch')}; alpha 0.5, T 2.0, beta 0; synthetic data; one CPU device."
      ),
      (
          "- One YAML per shape (`configs/distillation-cpu-tiny.yml` resized; `enable_nnx` dropped because MaxText 0.2.5"
          " refuses it) is read by all four variants; only `distill_loss_impl` differs between ours."
      ),
      (
          "- **ours_dense / ours_chunked**: `step.make_train_step` after `train_utils.setup_train_loop`, jitted as"
          " `trainer.train` jits it (donated state, MaxText's state shardings)."
      ),
      (
          "- **upstream**: MaxText 0.2.5's `train_distill.main`, unchanged up to Tunix's loop; the step is the `nnx.jit`"
          " Tunix builds (`jit_train_and_eval_step`), called on a batch prepared as Tunix's loop prepares it."
          " `tools/upstream_compat.py` (benchmark-only) adds the `_checkpointer` attribute the released Tunix 0.1.7"
          " lacks and hands the compiled step over instead of entering Tunix's loop, which ignores `steps`. Tunix's"
          " per-step host work outside the step (metrics buffering, a host sync for its console line) is not timed."
      ),
      (
          "- **floor**: MaxText's own pre-training `train_step` (student forward, plain CE, backward, optimizer update)"
          " plus a teacher forward pass, in one `jax.jit`: the least an online distillation step must compute."
      ),
      (
          "- Timing: each variant in its own process, compiled ahead of time and warmed up by one step; then"
          f" {plan['rounds']} rounds in which every variant, in rotating order, runs about {plan['round_target_s']} s"
          " (at least one step) while the others sleep. Step times are medians over all timed steps; ratios are the"
          " median (and range) over rounds of the two variants' per-round medians, so load drifting between rounds"
          " cancels."
      ),
      (
          "- Memory: `compiled.memory_analysis().temp_size_in_bytes` of each compiled train step (XLA's scratch"
          " buffers: activations, logits, gradients in flight; not parameters, optimizer state or the batch), and"
          " each process's peak RSS (`ru_maxrss`: includes Python, JAX and MaxText imports and compilation)."
      ),
  ] + (
      [f"- **--quick** compiles with `XLA_FLAGS={plan['xla_flags']}` to save time: its timings mean nothing."]
      if plan.get("xla_flags")
      else []
  )


def _headroom_line(rows: list[dict]) -> list[str]:
  """The four processes of a shape live at once: the sum of their peak RSS bounds the RAM the run needs."""
  sums = [(sum(_mib(r, v, "maxrss_kib") or 0 for v in VARIANTS) / 1024, r["shape"]) for r in rows]
  if not sums:
    return []
  top, shape = max(sums, key=lambda x: x[0])
  return [
      f"- RAM: the four processes of a shape run side by side; their peak RSS sums to at most {top:.1f} GiB (vocab"
      f" {shape['vocab']}, seq {shape['seq']})."
  ]


def render_markdown(report: dict) -> str:
  rows = report["rows"]
  plot = f"![Compiled temp memory vs vocabulary]({report['plot_name']})" if report.get("plot_name") else ""
  lines = ['# Benchmarks: the online distillation step ("Lean and fast")', "", "Reproduce (repository root, `.venv`):"]
  lines += ["", "```bash", report["command"], "```", "", *_context_lines(report), *_headroom_line(rows), ""]
  lines += ["## Targets", "", *target_lines(rows), "", "## Why", "", *analysis_lines(rows), ""]
  lines += ["## Step time (median s per step; ratios: median (range) over rounds)", "", *time_table(rows), ""]
  lines += ["## Memory", "", *memory_table(rows), "", plot, ""]
  lines += ["## Compile time and fastest step", "", *setup_table(rows), ""]
  if failures(rows):
    lines += ["## Failures", "", *failures(rows), ""]
  return "\n".join(lines)


def write_plot(rows: list[dict], path: pathlib.Path) -> bool:
  """Compiled temp memory vs vocabulary size, one line per variant and sequence length."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    logging.warning("matplotlib is not installed: no plot written")
    return False
  fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
  colors = {"ours_dense": "tab:blue", "ours_chunked": "tab:green", "upstream": "tab:red", "floor": "tab:gray"}
  for seq, style in zip(sorted({r["shape"]["seq"] for r in rows}, reverse=True), ("-", "--", ":", "-.")):
    chosen = sorted((r for r in rows if r["shape"]["seq"] == seq), key=lambda r: r["shape"]["vocab"])
    for variant in VARIANTS:
      points = [(r["shape"]["vocab"], _mib(r, variant)) for r in chosen if _mib(r, variant) is not None]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, style, marker="o", color=colors[variant], label=f"{variant}, seq {seq}")
  ax.set_xscale("log", base=2)
  vocabs = sorted({r["shape"]["vocab"] for r in rows})
  ax.set_xticks(vocabs, [f"{v // 1024}k" if v >= 1024 else str(v) for v in vocabs])
  ax.set_yscale("log")
  ax.set_xlabel("vocabulary size")
  ax.set_ylabel("compiled temp memory of the train step (MiB)")
  ax.set_title("XLA temp memory per training step (lower is better)")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return True


# --- Command line ---


def parse_shapes(text: str) -> tuple[Shape, ...]:
  """``"32768x1024,1024x256"`` (vocab x seq) with the full run's widths."""
  shapes = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    vocab, seq = item.lower().split("x")
    shapes.append(Shape(vocab=int(vocab), seq=int(seq)))
  return tuple(shapes)


def parse_args(argv: list[str]):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"), help="Markdown report to write")
  parser.add_argument("--plot", default=None, help="PNG plot (default: benchmarks_memory.png beside --out)")
  parser.add_argument("--json", default=None, help="also write the raw results as JSON here")
  parser.add_argument("--quick", action="store_true", help="one tiny shape, 2 rounds (< ~60 s): the smoke test")
  parser.add_argument("--shapes", default=None, help="vocab x seq list, e.g. 32768x1024,1024x256 (full widths)")
  parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per shape (default 5; quick 2)")
  parser.add_argument("--work-dir", default=None, help="teachers, YAMLs, worker logs (default: a temp dir)")
  parser.add_argument(
      "--chunked-args", default="", help="extra key=value for ours_chunked, e.g. distill_vocab_chunk=8192"
  )
  parser.add_argument("--from-json", default=None, help="re-render the report of a saved --json run; measures nothing")
  parser.add_argument("--teacher-checkpoint", default=None, help="quick only: reuse this tiny teacher's items dir")
  parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
  parser.add_argument("--yaml", help=argparse.SUPPRESS)
  parser.add_argument("--run-dir", help=argparse.SUPPRESS)
  parser.add_argument("--set", action="append", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def reproduce_command(args) -> str:
  """The command line that reruns this benchmark (scratch paths left out)."""
  shown = ["--out", args.out] + (["--quick"] if args.quick else [])
  shown += ["--shapes", args.shapes] if args.shapes else []
  shown += ["--rounds", str(args.rounds)] if args.rounds else []
  shown += ["--chunked-args", args.chunked_args] if args.chunked_args else []
  return "python tools/bench_distill.py " + shlex.join(shown)


def measure(args) -> dict:
  """Runs the benchmark described by the command line; returns the report (rows plus context)."""
  started = time.perf_counter()
  env = environment()
  shapes = (QUICK_SHAPE,) if args.quick else parse_shapes(args.shapes) if args.shapes else FULL_SHAPES
  plan = Plan(rounds=args.rounds or 5, round_target_s=1.0)
  if args.quick:
    plan = Plan(rounds=args.rounds or 2, round_target_s=0.3, xla_flags=QUICK_XLA_FLAGS)
  extra = {"ours_chunked": shlex.split(args.chunked_args)}
  with contextlib.ExitStack() as stack:
    work_dir = args.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_distill_"))
    teacher = args.teacher_checkpoint if args.quick else None
    rows = [measure_shape(shape, pathlib.Path(work_dir), plan, extra, teacher) for shape in shapes]
  return {
      "command": reproduce_command(args),
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "environment": env,
      "plan": dataclasses.asdict(plan),
      "rows": rows,
      "wall_s": time.perf_counter() - started,
  }


def write_outputs(report: dict, out: pathlib.Path, plot: pathlib.Path) -> None:
  report["plot_name"] = plot.name if write_plot(report["rows"], plot) else None
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(render_markdown(report), encoding="utf-8")
  logging.info("Wrote %s (%s)", out, plot if report["plot_name"] else "no plot")


def main(argv: list[str] | None = None) -> int:
  args = parse_args(list(sys.argv[1:] if argv is None else argv))
  if args.worker:
    return worker_main(args)
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  out = pathlib.Path(args.out)
  plot = pathlib.Path(args.plot) if args.plot else out.with_name("benchmarks_memory.png")
  if args.from_json:
    report = json.loads(pathlib.Path(args.from_json).read_text(encoding="utf-8"))
  else:
    report = measure(args)
    logging.info("Measured in %.0fs", report["wall_s"])
  if args.json and not args.from_json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
  write_outputs(report, out, plot)
  return 1 if failures(report["rows"]) else 0


if __name__ == "__main__":
  sys.exit(main())
