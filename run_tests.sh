#!/usr/bin/env bash
# One command on a fresh machine: set up .venv with the test, dask and preview extras, check the
# layer contracts (import-linter, .importlinter), then run the whole test suite. The gallery tests
# drive headless Chromium when it is installed (Debian: apt-get install chromium), else they skip.
# Arguments go to pytest (e.g. ./run_tests.sh -k attribution).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_venv.sh test,dask,preview
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
