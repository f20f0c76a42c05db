#!/usr/bin/env bash
# Set up (if needed), lint and run the whole test suite.
source "$(dirname "$0")/env.sh"
ruff check .
python -m pytest "$@"
