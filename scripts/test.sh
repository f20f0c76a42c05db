#!/usr/bin/env bash
# Set up (if needed), lint and run the whole test suite.
source "$(dirname "$0")/env.sh"
# The Khronos glTF validator for tests/test_glb.py (one small npm package, pinned in
# tests/gltf/package-lock.json): installed once where npm is; offline or without npm that check skips.
if command -v npm >/dev/null && [ ! -d tests/gltf/node_modules/gltf-validator ]; then
  timeout 180 npm ci --prefix tests/gltf --no-audit --no-fund --fetch-retries=1 >/dev/null 2>&1 \
    || echo "gltf-validator not installed (offline?): tests/test_glb.py skips the validator check"
fi
ruff check .
python -m pytest "$@"
