#!/usr/bin/env bash
# One command on a fresh machine: set up .venv (torch first) if needed, then build a small DAAM
# dataset from examples/prompts.txt on the built-in tiny model, and show how to load it.
# Extra arguments go to `daam-datasets run` (e.g. ./run_local.sh --steps 20 --format parquet).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_venv.sh
out=${OUTPUT:-out/sample}
.venv/bin/daam-datasets run \
  --prompts examples/prompts.txt \
  --output "$out" \
  --model tiny \
  --steps 10 --height 256 --width 256 \
  --shard-size 4 --format parquet,webdataset \
  "$@"
cat <<MSG

Dataset written to $(cd "$out" && pwd)
Load it with:
  .venv/bin/python -c "from datasets import load_dataset; ds = load_dataset('$out', split='train'); print(ds); print(ds[0]['tokens'])"
MSG
