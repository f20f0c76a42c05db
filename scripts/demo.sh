#!/usr/bin/env bash
# Set up (if needed) and reconstruct the built-in example photo into out/demo/.
source "$(dirname "$0")/env.sh"
python -m core demo -o out/demo --preset "${PRESET:-balanced}" "$@"
