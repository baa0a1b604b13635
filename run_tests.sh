#!/usr/bin/env bash
# One command on a fresh machine: set up .venv with the test, dask and preview extras, then run the
# whole test suite. The gallery tests drive headless Chromium when it is installed
# (Debian: apt-get install chromium) and are skipped otherwise.
# Arguments go to pytest (e.g. ./run_tests.sh -k attribution).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_venv.sh test,dask,preview
exec .venv/bin/python -m pytest "$@"
