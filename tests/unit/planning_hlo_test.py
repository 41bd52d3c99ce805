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

"""The planner's HLO reading: collectives per step with loop trip counts, and the [B, S, V] buffer search.

The hand-written module below is in the compiled-HLO text format; its collectives and their runs per step are
known by construction: one all-gather at top level, a reduce-scatter and an async all-gather in a while body of 16
known trips, an all-reduce in a nested body of 3 trips (found from its condition's constant) inside it, and an
all-to-all in a loop whose trip count cannot be determined.
"""

from maxtext_distill_plugin.planning import hlo

MODULE = """HloModule jit_step, entry_computation_layout={(f32[8,16]{1,0})->f32[8,16]{1,0}}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(f32[] %x, f32[] %y)
}

%inner_cond (p: (s32[], f32[4,1000])) -> pred[] {
  %p = (s32[], f32[4,1000]{1,0}) parameter(0)
  %i = s32[] get-tuple-element((s32[], f32[4,1000]{1,0}) %p), index=0
  %limit = s32[] constant(3)
  ROOT %lt = pred[] compare(s32[] %i, s32[] %limit), direction=LT
}

%inner_body (p: (s32[], f32[4,1000])) -> (s32[], f32[4,1000]) {
  %p = (s32[], f32[4,1000]{1,0}) parameter(0)
  %v = f32[4,1000]{1,0} get-tuple-element((s32[], f32[4,1000]{1,0}) %p), index=1
  %ar = f32[4,1000]{1,0} all-reduce(f32[4,1000]{1,0} %v), channel_id=3, replica_groups={{0,1,2,3}}, to_apply=%add
  %i = s32[] get-tuple-element((s32[], f32[4,1000]{1,0}) %p), index=0
  ROOT %t = (s32[], f32[4,1000]{1,0}) tuple(s32[] %i, f32[4,1000]{1,0} %ar)
}

%outer_cond (p: (s32[], f32[4,1000])) -> pred[] {
  %p = (s32[], f32[4,1000]{1,0}) parameter(0)
  %i = s32[] get-tuple-element((s32[], f32[4,1000]{1,0}) %p), index=0
  %a = s32[] constant(16)
  %b = s32[] constant(99)
  ROOT %lt = pred[] compare(s32[] %i, s32[] %a), direction=LT
}

%outer_body (p: (s32[], f32[4,1000])) -> (s32[], f32[4,1000]) {
  %p = (s32[], f32[4,1000]{1,0}) parameter(0)
  %v = f32[4,1000]{1,0} get-tuple-element((s32[], f32[4,1000]{1,0}) %p), index=1
  %rs = f32[1,1000]{1,0} reduce-scatter(f32[4,1000]{1,0} %v), channel_id=4, dimensions={0}, to_apply=%add
  %gather_start = (f32[1,1000]{1,0}, bf16[64,1000]{1,0}) all-gather-start(f32[1,1000]{1,0} %rs), channel_id=5, dimensions={0}
  %agd = bf16[64,1000]{1,0} all-gather-done((f32[1,1000]{1,0}, bf16[64,1000]{1,0}) %gather_start)
  %w = (s32[], f32[4,1000]{1,0}) while((s32[], f32[4,1000]{1,0}) %p), condition=%inner_cond, body=%inner_body
  ROOT %t = (s32[], f32[4,1000]{1,0}) tuple(s32[] %i, f32[4,1000]{1,0} %v)
}

%odd_cond (p: (s32[], f32[8,16])) -> pred[] {
  %p = (s32[], f32[8,16]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

%odd_body (p: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %p = (s32[], f32[8,16]{1,0}) parameter(0)
  %v = f32[8,16]{1,0} get-tuple-element((s32[], f32[8,16]{1,0}) %p), index=1
  %a2a = f32[8,16]{1,0} all-to-all(f32[8,16]{1,0} %v), channel_id=6, dimensions={0}
  ROOT %t = (s32[], f32[8,16]{1,0}) tuple(s32[] %i, f32[8,16]{1,0} %a2a)
}

ENTRY %main (x: f32[8,16]) -> f32[8,16] {
  %x = f32[8,16]{1,0} parameter(0)
  %ag = f32[32,16]{1,0} all-gather(f32[8,16]{1,0} %x), channel_id=1, replica_groups={{0,1,2,3}}, dimensions={0}
  %logits = bf16[2,128,1000]{2,1,0} broadcast(bf16[] %zero), dimensions={}
  %unembed = bf16[64,1000]{1,0} broadcast(bf16[] %zero), dimensions={}
  %init = (s32[], f32[4,1000]{1,0}) tuple(s32[] %c0, f32[4,1000]{1,0} %z)
  %loop = (s32[], f32[4,1000]{1,0}) while((s32[], f32[4,1000]{1,0}) %init), condition=%outer_cond, body=%outer_body, backend_config={"known_trip_count":{"n":"16"}}
  %odd = (s32[], f32[8,16]{1,0}) while((s32[], f32[8,16]{1,0}) %t0), condition=%odd_cond, body=%odd_body
  ROOT %r = f32[8,16]{1,0} copy(f32[8,16]{1,0} %x)
}
"""


def _by_kind(found):
  return {c.kind: c for c in found}


def test_collectives_count_each_run_of_their_loops():
  found, unknown = hlo.collectives(MODULE)
  kinds = _by_kind(found)
  assert sorted(kinds) == ["all-gather", "all-reduce", "all-to-all", "reduce-scatter"]
  gathers = [c for c in found if c.kind == "all-gather"]
  top = next(c for c in gathers if not c.in_loop)
  looped = next(c for c in gathers if c.in_loop)
  assert (top.count, top.bytes) == (1, 32 * 16 * 4)
  # The async start's tuple holds its operand too: only the gathered bf16[64,1000] counts.
  assert (looped.count, looped.bytes, looped.shapes) == (16, 64 * 1000 * 2, (("bf16", (64, 1000)),))
  assert (kinds["reduce-scatter"].count, kinds["reduce-scatter"].bytes) == (16, 1000 * 4)
  assert (kinds["all-reduce"].count, kinds["all-reduce"].bytes) == (16 * 3, 4 * 1000 * 4)
  assert kinds["all-reduce"].in_loop and kinds["reduce-scatter"].in_loop
  # The loop whose condition compares against no single constant counts once and is reported.
  assert (kinds["all-to-all"].count, unknown) == (1, 1)
  assert len(found) == 5


def test_summary_sums_bytes_per_step_and_flags_vocabulary_collectives_in_loops():
  found, _ = hlo.collectives(MODULE)
  summary = hlo.summarize(found, vocab_sizes={1000})
  gathers, reduces = summary["by_kind"]["all-gather"], summary["by_kind"]["all-reduce"]
  assert (gathers["instructions"], gathers["count"], gathers["bytes"]) == (2, 17, 32 * 16 * 4 + 16 * 128000)
  assert (gathers["in_loop_count"], gathers["in_loop_bytes"]) == (16, 16 * 128000)  # the top-level one is not
  assert (reduces["instructions"], reduces["count"], reduces["bytes"]) == (1, 48, 48 * 16000)
  assert (reduces["in_loop_count"], reduces["in_loop_bytes"]) == (48, 48 * 16000)
  vocab = summary["vocabulary_sized"]
  assert vocab["in_loop_count"] == 16 + 16 + 48  # reduce-scatter, all-gather and all-reduce all carry V
  assert vocab["in_loop_bytes"] == 16 * 4000 + 16 * 128000 + 48 * 16000
  assert vocab["count"] == vocab["in_loop_count"]  # the top-level all-gather has no vocabulary dimension


def test_sequence_vocab_buffers_find_logits_not_unembeddings_or_tiles():
  buffers = hlo.sequence_vocab_buffers(MODULE, seq_rows={128, 256}, vocab_sizes={1000}, widths={64})
  assert buffers == ["bf16[2,128,1000]"]  # bf16[64,1000] is an unembedding; f32[4,1000] a 4-row tile
  # An unembedding gathered with a leading unit axis is still an unembedding, even when its width equals S.
  gathered = "%g = bf16[1,128,1000]{2,1,0} all-gather(bf16[1,32,1000]{2,1,0} %w), dimensions={1}"
  assert hlo.sequence_vocab_buffers(gathered, seq_rows={128}, vocab_sizes={1000}, widths={128}) == []
  one_hot = "%o = pred[1,128,1000]{2,1,0} compare(s32[1,128,1000]{2,1,0} %a, s32[1,128,1000]{2,1,0} %b)"
  assert hlo.sequence_vocab_buffers(one_hot, {128}, {1000}, {128}) == ["pred[1,128,1000]", "s32[1,128,1000]"]
  assert hlo.sequence_vocab_buffers(MODULE, seq_rows={512}, vocab_sizes={1000}, widths={64}) == []
