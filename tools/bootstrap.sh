#!/usr/bin/env bash
# Copyright 2026 The maxtext-distill Authors.
# SPDX-License-Identifier: Apache-2.0
#
# Creates .venv with a Python >= 3.12, installs the pinned CPU dependency set and the plugin.
# Idempotent: a second run with unchanged pins and sources returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

find_python() {
  local candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    for v in "$root"/versions/3.1[2-9]*; do [ -x "$v/bin/python3" ] && candidates+=("$v/bin/python3"); done
  fi
  candidates+=(python3.14 python3.13 python3.12 python3)
  for py in "${candidates[@]}"; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

deps_hash() { cat requirements/lock.txt requirements/no-deps.txt | sha256sum | cut -c1-16; }
src_hash() {
  find pyproject.toml maxtext_distill_plugin.pth _maxtext_distill_hook.py maxtext_distill_plugin configs -type f \( -name '*.py' -o -name '*.yml' -o -name '*.toml' -o -name "*.pth" \) \
    -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

if [ ! -x "$VENV/bin/python" ]; then
  if ! PY="$(find_python)"; then
    echo "ERROR: maxtext-distill needs Python >= 3.12 (MaxText requires it); none was found." >&2
    echo "Fix: install Python 3.12 (e.g. 'pyenv install 3.12' or your OS package python3.12), or set PYTHON=/path/to/python3.12." >&2
    exit 1
  fi
  echo "bootstrap: creating $VENV with $PY ($("$PY" --version))"
  "$PY" -m venv "$VENV"
fi

if [ "$(cat "$VENV/.deps-stamp" 2>/dev/null)" != "$(deps_hash)" ]; then
  echo "bootstrap: installing the pinned dependency set (about a minute)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/no-deps.txt
  deps_hash > "$VENV/.deps-stamp"
  rm -f "$VENV/.src-stamp"
fi

if [ "$(cat "$VENV/.src-stamp" 2>/dev/null)" != "$(src_hash)" ]; then
  echo "bootstrap: installing maxtext-distill-plugin from the working tree"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall .
  # Fails loudly, here and not at the first run, when a package MaxText imports is missing.
  "$VENV/bin/python" -m maxtext_distill_plugin.check_install
  src_hash > "$VENV/.src-stamp"
fi
