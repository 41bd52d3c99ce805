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

"""Which shards of a cache this host has already hashed, so that a restart does not read the whole cache again.

A shard's sha256 is checked once per cache and host. The result is kept per
shard as the file's fingerprint at the time it was hashed (size, mtime and
ctime in ns, inode) together with the manifest's sha256 of it. On the next
open, a shard whose fingerprint and manifest hash are unchanged is trusted
without reading it; any change (rewritten, replaced, resized, touched, copied,
or a new manifest) makes it hashed again. ctime and inode are in the
fingerprint because a rewrite that restores the old mtime (``touch -d``,
``cp -p``) cannot restore them. ``python -m
maxtext_distill_plugin.teacher_cache.verify`` always re-hashes everything and
refreshes the record.

Where the record lives: ``<cache>/.verified/<hostname>.json``, one file per
host, so hosts never write the same file (a shared cache on a network file
system is fine); processes of one host merge their entries into the host's
file, written through a per-process temp file and an atomic rename. When the
cache directory cannot be written (a read-only mount), the record goes to
``$XDG_CACHE_HOME/maxtext-distill/verified/<hash of the cache path>/`` (default
``~/.cache``). Losing the record only costs a re-hash; it is never needed for
correctness.
"""

import hashlib
import json
import os
import socket

from absl import logging

RECORD_DIR = ".verified"
_VERSION = 1


def record_paths(directory: str) -> tuple[str, str]:
  """``(next to the cache, per-user fallback)`` paths of this host's record for ``directory``."""
  name = f"{socket.gethostname()}.json"
  cache_key = hashlib.sha256(os.path.realpath(directory).encode()).hexdigest()[:16]
  user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return (
      os.path.join(directory, RECORD_DIR, name),
      os.path.join(user_cache, "maxtext-distill", "verified", cache_key, name),
  )


def fingerprint(path: str, sha256: str) -> dict:
  """What must be unchanged for an earlier hash of ``path`` to still hold."""
  stat = os.stat(path)
  return {
      "bytes": stat.st_size,
      "mtime_ns": stat.st_mtime_ns,
      "ctime_ns": stat.st_ctime_ns,
      "inode": stat.st_ino,
      "sha256": sha256,
  }


def _read(path: str) -> dict[str, dict]:
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:  # unreadable or half-written by another tool: start over
    logging.warning("Ignoring the checksum record %s (%s); shards will be hashed again.", path, e)
    return {}
  if not isinstance(record, dict) or record.get("version") != _VERSION:
    return {}
  return dict(record.get("shards", {}))


def _write(path: str, entries: dict[str, dict]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temp = f"{path}.{os.getpid()}.tmp"
  with open(temp, "w", encoding="utf-8") as f:
    json.dump({"version": _VERSION, "host": socket.gethostname(), "shards": entries}, f, indent=1, sort_keys=True)
  os.replace(temp, path)


class ShardMemo:
  """This host's record of hashed shards for one cache directory."""

  def __init__(self, directory: str):
    self.directory = directory
    self._paths = record_paths(directory)
    self.entries: dict[str, dict] = {}
    for path in reversed(self._paths):  # the record next to the cache wins when both exist
      self.entries.update(_read(path))
    self._forgotten: set[str] = set()
    self._changed = False

  def is_verified(self, file: str, sha256: str) -> bool:
    """Whether ``file`` (a shard name) was hashed on this host and has not changed since."""
    entry = self.entries.get(file)
    if entry is None:
      return False
    try:
      return entry == fingerprint(os.path.join(self.directory, file), sha256)
    except OSError:
      return False

  def remember(self, file: str, sha256: str) -> None:
    self.entries[file] = fingerprint(os.path.join(self.directory, file), sha256)
    self._forgotten.discard(file)
    self._changed = True

  def forget(self, file: str) -> None:
    self.entries.pop(file, None)
    self._forgotten.add(file)
    self._changed = True

  def save(self) -> str | None:
    """Merges this process's entries into the host's record; returns where it went, or None if nowhere."""
    if not self._changed:
      return None
    for path in self._paths:
      try:
        merged = {k: v for k, v in _read(path).items() if k not in self._forgotten}
        merged.update(self.entries)
        _write(path, merged)
      except OSError as e:
        logging.info("Cannot write the checksum record %s (%s).", path, e)
        continue
      self._changed = False
      return path
    logging.warning("No place to remember verified shards of %s: the next open hashes them again.", self.directory)
    return None
