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

"""The offline teacher cache: the teacher's top-k log-probabilities, written once, read by student runs.

* :mod:`.codec`: the compact coding of one block of top-k rows (pure NumPy + zlib).
* :mod:`.format`: manifest and record layout (format version 2; version 1 is still read).
* :mod:`.writer`: crash-safe, resumable per-host shard writer.
* :mod:`.reader`: :func:`open_cache` and the Grain data source :class:`TeacherCache`.
* :mod:`.verify`: checksums, counts, bytes/token, and comparison with a live teacher.
* :mod:`.upstream_interop`: reading and converting MaxText's own top-k files.
* :mod:`.any_format`: :func:`open_any`, either format behind one reader interface (what training opens).

Submodules are imported on use; this package itself imports nothing.
"""
