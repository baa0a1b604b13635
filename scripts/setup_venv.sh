#!/usr/bin/env bash
# Create/refresh the project virtualenv (.venv by default) with the known-good versions.
# Usage: scripts/setup_venv.sh [EXTRAS]     e.g. scripts/setup_venv.sh test,dask,preview
# Environment: PYTHON (default python3), VENV (default .venv),
#   TORCH_SPEC (default torch==2.13.0), TORCH_PIP_ARGS (e.g. "--index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
venv=${VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv" >&2
  "${PYTHON:-python3}" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# torch first and on its own: resolved later as a dependency it would pull multi-GB CUDA wheels.
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing ${TORCH_SPEC:-torch==2.13.0}" >&2
  # shellcheck disable=SC2086
  "${pip[@]}" install ${TORCH_PIP_ARGS:-} "${TORCH_SPEC:-torch==2.13.0}"
fi
target=".${extras:+[$extras]}"
stamp="$venv/.daam-datasets-setup"
want="$(cat setup.py constraints.txt | sha256sum | cut -c1-16) $extras"
if [ ! -f "$stamp" ] || ! grep -qxF -- "$want" "$stamp"; then
  echo "setup: installing daam-datasets${extras:+[$extras]} (editable)" >&2
  "${pip[@]}" install -c constraints.txt -e "$target"
  echo "$want" >> "$stamp"
fi
