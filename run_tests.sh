#!/usr/bin/env bash
# One command on a fresh machine: set up .venv with the test extras, then run the whole test suite.
# Arguments go to pytest (e.g. ./run_tests.sh -k attribution).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_venv.sh test
exec .venv/bin/python -m pytest "$@"
