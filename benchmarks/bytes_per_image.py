"""Bytes per image written (image + maps) and encode/write seconds per image, per output option.

    python -m benchmarks.bytes_per_image [--model sd15|sd21|sdxl|tiny|PATH] [--prompts 2] [--size 512]
        [--steps 1] [--batch-size 2] [--shard-size 2] [--variant LABEL="RUN ARGS" ...] [--device auto]
        [--name bytes_per_image]

Each variant is one ``daam-datasets run`` (in this process, FnApiRunner) on the same prompts with
its own extra arguments (default variants: ``float16`` maps, the default, and ``float32``; e.g.
``--variant uint8="--map-dtype uint8" --variant map32="--map-size 32"`` where those options
exist). From the Parquet files under ``data/``: total bytes / rows, and per column the compressed
bytes of its column chunks / rows (pyarrow metadata; ``footer`` is the rest of the file). Encode:
seconds inside ``shard_generator.to_record`` (the PNG and the map arrays of a row); write:
seconds inside ``commit_shard`` (Arrow table, Parquet, stats marker), both per row, beside the
denoiser's ``forward`` seconds per row. ``ratio`` is the first variant's encode + write seconds
over its denoiser seconds (what a synchronous encoder adds). ``--model`` takes a
shape's name (``benchmarks.shapes.saved``: full-size denoiser, random weights; its images are
noise, which PNG cannot compress, so the image column is an upper bound). Writes
benchmarks/results/bytes_per_image.json (``--name``: another name).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks import shapes
from benchmarks.beam_throughput import _corpus, denoiser_class
from benchmarks.common import CallTimer, resolve_device, result_record, write_result
from pipeline.cli import main as cli_main

# what is timed: label -> (module, function); the callers look these names up at call time
TIMED = {"encode": ("transforms.shards.generator", "to_record"), "write": ("transforms.shards.dofn", "commit_shard")}
DEFAULT_VARIANTS = [("float16", ""), ("float32", "--map-dtype float32")]


def parquet_bytes(folder: Path) -> dict[str, Any]:
    """Rows, file bytes and per-column compressed bytes of every Parquet file under ``folder``."""
    rows, total = 0, 0
    columns: dict[str, int] = {}
    uncompressed: dict[str, int] = {}
    files = sorted(folder.rglob("*.parquet"))
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        rows += metadata.num_rows
        total += path.stat().st_size
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                top = chunk.path_in_schema.split(".")[0]
                columns[top] = columns.get(top, 0) + chunk.total_compressed_size
                uncompressed[top] = uncompressed.get(top, 0) + chunk.total_uncompressed_size
    columns["footer"] = total - sum(columns.values())
    per_row = max(rows, 1)
    return {
        "files": len(files), "rows": rows, "bytes": total, "bytes_per_row": total / per_row,
        "column_bytes_per_row": {k: v / per_row for k, v in sorted(columns.items(), key=lambda kv: -kv[1])},
        "column_uncompressed_bytes_per_row": {k: v / per_row for k, v in uncompressed.items()},
    }


def run_variant(label: str, extra: str, corpus: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``daam-datasets run`` with ``extra`` arguments: bytes and encode/write seconds per row."""
    out = work / label
    argv = ["run", "--prompts", str(corpus), "--output", str(out), "--model", args.model, "--device", args.device,
            "--steps", str(args.steps), "--height", str(args.size), "--width", str(args.size),
            "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size), *shlex.split(extra)]
    timers = {k: CallTimer(importlib.import_module(m), f, args.device) for k, (m, f) in TIMED.items()}
    timers["denoiser"] = CallTimer(denoiser_class(args.model), "forward", args.device)
    start = time.perf_counter()
    with ExitStack() as stack:
        for timer in timers.values():
            stack.enter_context(timer)
        code = cli_main(argv)
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"variant {label}: daam-datasets {' '.join(argv)} exited {code}")
    written = parquet_bytes(out / "data")
    rows = max(written["rows"], 1)
    seconds = {k: t.seconds / rows for k, t in timers.items()}
    shutil.rmtree(out, ignore_errors=True)
    return {"label": label, "arguments": extra, "wall_seconds": wall, **written,
            "seconds_per_row": seconds, "calls": {k: t.calls for k, t in timers.items()}}


def variant(value: str) -> tuple[str, str]:
    """``LABEL=ARGS`` → ``(LABEL, ARGS)``."""
    label, sep, extra = value.partition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"give LABEL=\"RUN ARGS\", got {value!r}")
    return label.strip(), extra.strip()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15", help=f"a model folder, a built-in model, or a shape: {', '.join(shapes.SHAPES)}")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1, help="steps change neither bytes nor encode time")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--variant", dest="variants", type=variant, action="append", default=None,
                        metavar='LABEL="RUN ARGS"', help="an output option to measure (repeatable)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="with a shape name: its tiny widths (a smoke check)")
    parser.add_argument("--name", default="bytes_per_image", help="result name (benchmarks/results/NAME.json)")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    args.variants = args.variants or DEFAULT_VARIANTS
    shape = args.model if args.model in shapes.SHAPES else None
    if shape:
        args.model = str(shapes.saved(shape, tiny=args.tiny))
    work = Path(tempfile.mkdtemp(prefix="daam-bytes-"))
    try:
        corpus = _corpus(work, args.prompts)
        variants = {label: run_variant(label, extra, corpus, work, args) for label, extra in args.variants}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = variants[args.variants[0][0]]["seconds_per_row"]
    result = result_record(
        args.name, (first["encode"] + first["write"]) / first["denoiser"], args.device,
        ratio_is=f"encode + write seconds over the denoiser's seconds, per row ({args.variants[0][0]}): what a "
                 "synchronous encoder adds to the denoiser's time",
        what="bytes per row of the Parquet output (per column) and encode/write seconds per row, per output option",
        settings={**vars(args), "shape": shape, "variants": [list(v) for v in args.variants]},
        bytes_per_row={k: v["bytes_per_row"] for k, v in variants.items()},
        variants=variants,
    )
    path = write_result(args.name, result)
    for label, v in variants.items():
        top = ", ".join(f"{k} {b / 1024:.1f}" for k, b in list(v["column_bytes_per_row"].items())[:4])
        print(f"{label}: {v['bytes_per_row'] / 1024:.1f} KiB per row ({top} KiB); encode "
              f"{1000 * v['seconds_per_row']['encode']:.1f} ms, write {1000 * v['seconds_per_row']['write']:.1f} ms "
              f"per row ({v['rows']} rows, {args.size}px)")
    print(f"encode + write = {100 * result['ratio']:.1f}% of the denoiser's time per row ({args.variants[0][0]}); "
          f"results: {path}")
    return result


if __name__ == "__main__":
    main()
