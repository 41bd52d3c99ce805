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

"""Parent side: start one worker process per variant, interleave timed rounds, collect what each reports.

The parent imports neither JAX nor MaxText, so its own footprint does not mix with the workers'.
"""

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import select
import statistics
import subprocess
import sys
import time

from absl import logging

from tools.bench import shapes
from tools.bench import tables

# Each worker is the benchmark's own command line in its internal --worker mode.
ENTRY = shapes.REPO / "tools" / "bench_distill.py"


class Worker:
  """A worker process and its line protocol."""

  def __init__(
      self,
      variant: str,
      yaml_path: pathlib.Path,
      run_dir: pathlib.Path,
      extra: list[str],
      xla_flags="",
      checkout: pathlib.Path | None = None,
  ):
    """``checkout``: the repository whose benchmark and plugin the worker runs (default: this one)."""
    checkout = checkout or shapes.REPO
    self.variant = variant
    self.log_path = run_dir / f"{variant}.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(checkout / ENTRY.relative_to(shapes.REPO)), "--worker", variant, "--yaml", str(yaml_path)]
    cmd += ["--run-dir", str(run_dir)] + [f"--set={kv}" for kv in extra]
    self._log = open(self.log_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        cmd,
        cwd=checkout,
        env=shapes.child_env(xla_flags, checkout),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=self._log,
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
  for first in range(0, len(shapes.VARIANTS), plan.parallel_starts):
    names = shapes.VARIANTS[first : first + plan.parallel_starts]
    batch = [Worker(v, yaml_path, run_dir, extra.get(v, []), plan.xla_flags) for v in names]
    for worker in batch:
      worker.wait_ready(plan.ready_timeout_s)
    workers += batch
  return workers


def steps_for_round(worker: Worker, plan: Plan) -> int:
  times = [t for r in worker.rounds for t in r]
  estimate = statistics.median(times) if times else (worker.ready or {}).get("first_step_s", 1.0)
  return max(1, min(plan.max_steps_per_round, int(plan.round_target_s / max(estimate, 1e-6))))


def measure_shape(shape: shapes.Shape, work_dir: pathlib.Path, plan: Plan, extra: dict, teacher=None) -> dict:
  """All variants on one shape: compile, interleaved rounds (rotating order), peak RSS."""
  started = time.perf_counter()
  teacher = teacher or shapes.make_teacher(shape, work_dir)
  yaml_path = shapes.write_yaml(shape, teacher, work_dir / "configs" / f"{shape.name}.yml")
  logging.info("Shape %s: starting %s", shape.name, ", ".join(shapes.VARIANTS))
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
  brief = " ".join(f"{v}={tables.fmt(r['median_step_s'], '.3f')}s" for v, r in results.items())
  logging.info("Shape %s done in %.0fs: %s", shape.name, elapsed, brief)
  return {"shape": dataclasses.asdict(shape), "name": shape.name, "yaml": str(yaml_path), "wall_s": elapsed, **results}


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
