#!/usr/bin/env bash
# One command on a fresh machine: set up .venv (torch first, matplotlib for the gallery) if needed,
# build a small DAAM dataset on the built-in, trained colour-world model (its images and colour-word
# maps mean something; its truth is known: `daam-datasets evaluate`), write its HTML gallery, and
# show how to load it. Extra arguments go to `daam-datasets run` (e.g. ./run_local.sh --steps 10).
# MODEL=colour-world-sa (the UNet with self-attention: refined labels) or MODEL=colour-world-dit (the
# Flux-shaped MM-DiT: also ConceptAttention maps, and the gallery switches between the two kinds).
# Arbitrary prompts: `daam-datasets run --model tiny --prompts examples/prompts.txt --output out/tiny`.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_venv.sh preview
model=${MODEL:-colour-world}
out=${OUTPUT:-out/sample${MODEL:+-$model}}
extra=()
hint=""
if [ "$model" = colour-world-dit ]; then extra=(--concept-maps); hint="; switch to ConceptAttention maps at the top"; fi
.venv/bin/daam-datasets run \
  --prompts examples/colour_world_prompts.txt \
  --output "$out" \
  --model "$model" \
  --classes colours \
  --shard-size 12 --format parquet,webdataset \
  "${extra[@]}" "$@"
.venv/bin/daam-datasets preview "$out" --n 24
root=$(cd "$out" && pwd)
cat <<MSG

Dataset written to $root
Gallery: $root/preview/index.html   (hover a colour word to see where it acted$hint)
Load it with:
  .venv/bin/python -c "from datasets import load_dataset; ds = load_dataset('$out', split='train'); print(ds); print(ds[0]['tokens'])"
  .venv/bin/python -c "from datasets import load_dataset; print(load_dataset('$out', 'segmentation', split='train'))"
MSG
