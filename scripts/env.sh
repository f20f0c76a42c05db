#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: creates .venv from the pinned requirements when they changed,
# activates it, and points Likeness at ../shared's ICT-FaceKit copy when one is there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
STAMP="$VENV/.requirements.sha256"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "Setting up $VENV (first run downloads ~5 GB of wheels; later runs reuse pip's cache)..."
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --progress-bar off -r "$ROOT/requirements-dev.txt"
  echo "$WANT" > "$STAMP"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
SHARED_ICT="$(cd "$ROOT/.." && pwd)/shared/ict-facekit/ICT-FaceKit-master.zip"
if [ -z "${LIKENESS_ICT_FACEKIT:-}" ] && [ -f "$SHARED_ICT" ]; then
  export LIKENESS_ICT_FACEKIT="$SHARED_ICT"
fi
SHARED_FACE_API="$(cd "$ROOT/.." && pwd)/shared/face-api"
if [ -z "${LIKENESS_FACE_API:-}" ] && [ -d "$SHARED_FACE_API" ]; then
  export LIKENESS_FACE_API="$SHARED_FACE_API"
fi
cd "$ROOT"
