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

"""Run safety: preemption that every process agrees on, and a stop on the first non-finite loss term.

Preemption. A scheduler's SIGTERM reaches the hosts of a multi-host job at
different moments; if each process stopped on its own signal, one would enter
the collective checkpoint save while another entered the next step's
collectives, and both would hang until SIGKILL. So the stop is a decision that
all processes take after the same step, in one of three ways:

- JAX's preemption sync manager, where ``jax.distributed`` runs it (the JAX
  default, and what MaxText's checkpointing consults): its own SIGTERM notifier
  stays installed, the notice is shared through the coordination service, and
  ``multihost_utils.reached_preemption_sync_point`` names one step for all.
- Several processes without it: a Python SIGTERM flag, combined across
  processes by a max-reduction launched after each step and read after the
  next one (so it never waits on the step in flight). All processes read the
  same reduced value, hence stop after the same step, one step after the signal.
- One process: the Python flag alone.

The loop then writes one checkpoint of the last completed step and exits 0.

Non-finite values are detected from the per-step metric sums, which the loop
checks before any checkpoint is written, so a checkpoint never holds
parameters updated from a NaN/Inf loss.
"""

import functools
import signal
import threading

from absl import logging
import jax
import numpy as np

EXIT_NON_FINITE = 3


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or Inf."""

  def __init__(self, step: int, term: str, value: float, last_checkpoint: int | None):
    self.step, self.term = step, term
    super().__init__(
        f"{term} is {value} at step {step + 1} (the first non-finite step); the run stopped before saving it."
        f" Last good checkpoint: {last_checkpoint if last_checkpoint is not None else 'none'}."
        " Fix: lower learning_rate or distill_temperature, check gradient_clipping_threshold, or inspect that batch."
    )


def _jax_preemption_sync_manager():
  """JAX's preemption sync manager when ``jax.distributed`` started one, else None."""
  from jax._src import distributed  # pylint: disable=import-outside-toplevel

  state = distributed.global_state
  return state.preemption_sync_manager if state.client is not None else None


class PreemptionFlag:
  """Turns SIGTERM on any process into one stop decision that every process takes after the same step.

  Call :meth:`should_stop` once after every step, on every process, with the same step numbers.
  """

  def __init__(self):
    self.requested = False  # the shared decision
    self._signalled = False  # this process got SIGTERM (Python flag modes)
    self._pending = None  # the cross-process reduction launched after the previous step
    self._previous = None
    self._use_jax_sync = _jax_preemption_sync_manager() is not None
    # Under JAX's sync manager the SIGTERM handler is its notifier's: a Python handler would replace it for good.
    if not self._use_jax_sync and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    self.mode = "jax-sync" if self._use_jax_sync else ("reduce" if jax.process_count() > 1 else "local")

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: finishing the current step, then checkpointing and exiting.")
    self._signalled = True

  def should_stop(self, step: int) -> bool:
    """Whether every process stops after ``step`` (the same answer on all of them)."""
    if self.requested:
      return True
    if self._use_jax_sync:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

      self.requested = bool(multihost_utils.reached_preemption_sync_point(step))
    elif jax.process_count() == 1:
      self.requested = self._signalled
    else:
      previous, self._pending = self._pending, _launch_any_process(self._signalled)
      self.requested = previous is not None and bool(np.asarray(previous.addressable_data(0)))
    return self.requested

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _launch_any_process(flag: bool) -> jax.Array:
  """Dispatches (without waiting) the max over processes of ``flag``: a replicated int32 scalar."""
  by_process, replicated = _process_shardings()
  flags = jax.make_array_from_process_local_data(by_process, np.full((1,), flag, np.int32))
  return _max_replicated(flags, replicated)


@functools.cache
def _process_shardings():
  """``[process_count]`` with one entry per process, and a replicated scalar, over every device."""
  devices = np.array(jax.devices()).reshape(jax.process_count(), jax.local_device_count())
  mesh = jax.sharding.Mesh(devices, ("processes", "local"))
  P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name
  return jax.sharding.NamedSharding(mesh, P("processes")), jax.sharding.NamedSharding(mesh, P())


@functools.partial(jax.jit, static_argnums=1)
def _max_replicated(flags: jax.Array, replicated) -> jax.Array:
  return jax.lax.with_sharding_constraint(flags.max(), replicated)


class FiniteGuard:
  """Remembers each step's metric sums until they are checked on the host."""

  def __init__(self):
    self._pending: list[tuple[int, dict]] = []
    self.last_checkpoint: int | None = None

  def add(self, step: int, metrics: dict) -> None:
    self._pending.append((step, metrics))

  def check(self) -> None:
    """Raises NonFiniteLossError for the first pending step with a non-finite term."""
    pending, self._pending = self._pending, []
    for step, metrics in jax.device_get(pending):
      for name, (total, _) in sorted(metrics.items()):
        if not np.isfinite(total):
          raise NonFiniteLossError(step, name, float(total), self.last_checkpoint)
