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

"""What the student's multi-token-prediction head costs the compiled training step (README, "Memory-lean loss").

    python tools/measure_mtp_memory.py [--seq 256,1024] [--vocab 32768] [--impl chunked,dense]

A tiny teacher is pre-trained by MaxText (one step) at the given vocabulary; for each loss implementation, sequence
length and ``mtp_num_layers`` in {0, 1} the plugin's step is compiled as the trainer compiles it, and XLA's
``memory_analysis`` is printed with the number of ``f32[B, S, V]`` arrays the step defines (the logits of a head and
their gradients). Deterministic: nothing is timed.
"""

import argparse
import json
import pathlib
import re
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from tests.conftest import TINY_YAML, maxtext_pretrain  # pylint: disable=wrong-import-position
from tools.bench import workers  # pylint: disable=wrong-import-position

_BATCH = 2  # per_device_batch_size on the one CPU device


def measure(items: str, out: str, impl: str, seq: int, vocab: int, mtp_layers: int) -> dict:
  argv = [
      "measure_mtp_memory",
      TINY_YAML,
      "run_name=mtp",
      f"base_output_directory={out}",
      f"teacher_overrides.load_parameters_path={items}",
      f"vocab_size={vocab}",
      f"teacher_overrides.vocab_size={vocab}",
      f"max_target_length={seq}",
      f"per_device_batch_size={_BATCH}",
      "enable_checkpointing=False",
      f"mtp_num_layers={mtp_layers}",
      "steps=2",
  ]
  bench = workers.build_ours(argv, impl)
  try:
    text = bench.compiled.as_text()
    defined = len(re.findall(rf"= f32\[{_BATCH},{seq},{vocab}\]", text))
    return {**workers.compiled_stats(bench.compiled), "bsv_arrays": defined}
  finally:
    bench.keep_alive.close()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seq", default="256,1024", help="max_target_length values, comma-separated")
  parser.add_argument("--vocab", type=int, default=32768)
  parser.add_argument("--impl", default="chunked,dense", help="distill_loss_impl values, comma-separated")
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix="mtp_memory_")
  proc = maxtext_pretrain(work, "t", "base_num_decoder_layers=2", "steps=1", f"vocab_size={args.vocab}")
  if proc.returncode != 0:
    sys.exit(f"MaxText pre-training failed:\n{proc.stderr[-3000:]}")
  items = str(pathlib.Path(work) / "t" / "checkpoints" / "0" / "items")
  for impl in args.impl.split(","):
    for seq in (int(s) for s in args.seq.split(",")):
      rows = {mtp: measure(items, work, impl, seq, args.vocab, mtp) for mtp in (0, 1)}
      grown = rows[1]["temp_bytes"] - rows[0]["temp_bytes"]
      print(
          json.dumps({
              "impl": impl,
              "seq": seq,
              "vocab": args.vocab,
              "mtp_temp_growth_bytes": grown,
              **{f"mtp{mtp}": row for mtp, row in rows.items()},
          }),
          flush=True,
      )


if __name__ == "__main__":
  main()
