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

"""One process of a two-process JAX job whose steps are a cross-process sum, stopped by run_guard.PreemptionFlag.

Usage: preemption_worker.py COORDINATOR_ADDRESS PROCESS_ID jax-sync|reduce. Prints "step N" after each step,
"mode M" once, and "stopped after step N" when the flag stops it.
"""

import sys
import time

import jax
import numpy as np


def main(address: str, process_id: int, service: str) -> None:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_enable_preemption_service", service == "jax-sync")
  jax.distributed.initialize(coordinator_address=address, num_processes=2, process_id=process_id)
  from maxtext_distill_plugin.training import run_guard  # pylint: disable=import-outside-toplevel

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
  x = jax.make_array_from_process_local_data(sharding, np.ones((1,), np.float32))
  total = jax.jit(lambda v: v.sum(), out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  flag = run_guard.PreemptionFlag()
  print(f"mode {flag.mode}", flush=True)
  for step in range(100_000):
    total(x).block_until_ready()  # a collective: a process that stopped alone would hang the other here
    print(f"step {step}", flush=True)
    time.sleep(0.02)
    if flag.should_stop(step):
      print(f"stopped after step {step}", flush=True)
      break
  flag.restore()


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
