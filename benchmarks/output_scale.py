"""Everything after generation at millions of rows: ``validate`` (whole and ``--sample``), ``preview``,
``publish`` planning, the card and ``load_dataset``, on synthetic outputs, in bounded memory?

    python -m benchmarks.output_scale [--sizes 100000,1000000] [--shard-size 1000]

No model runs at scale: one real run of the tiny model (1 prompt, 32 px) gives a template row and
``run.json``; each size's output is then written through the real shard writer
(``transforms.shards.sinks.commit_shard``: Parquet, stats markers) with that row's image, tokens and
words, random maps and new ids, and its card through ``pipeline.card.output_card``. Each command
runs in a fresh interpreter (``common.json_subprocess``): peak RSS growth over the post-import base
(``VmHWM``), seconds, and µs per row. Time should be linear in rows and memory flat.
Writes benchmarks/results/output_scale.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPOSITORY, json_subprocess, result_record, status_kib, write_result

COMMANDS = ("write", "validate", "validate_sample", "preview", "publish_plan", "load_dataset")


def make_template(folder: Path) -> Path:
    """A one-prompt output of the tiny model (its run.json, features and first row are copied)."""
    corpus = folder / "one.txt"
    corpus.write_text("a red fox in the snow\n", encoding="utf-8")
    out = folder / "template"
    cli = str(Path(sys.executable).with_name("daam-datasets"))
    subprocess.run([cli, "run", "--prompts", str(corpus), "--output", str(out), "--steps", "1", "--height", "32",
                    "--width", "32", "--runner=FnApiRunner"], check=True, capture_output=True, cwd=REPOSITORY)
    return out


def write_output(template: str, out: str, rows: int, shard_size: int) -> dict[str, Any]:
    """``rows`` synthetic rows in shards of ``shard_size`` through the real writer, then the card."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.card import output_card, write_card
    from pipeline.output import collect_stats
    from schemas.maps import decode_token_maps
    from schemas.output_records import RunInfo
    from schemas.record import Record, run_features
    from transforms.shards.layout import RUN_FILE, OutputLayout
    from transforms.shards.sharding import plan_shards
    from transforms.shards.results import ShardResult
    from transforms.shards.sinks import commit_shard

    source = OutputLayout(template)
    info = RunInfo.from_dict(source.read_json(source.path(RUN_FILE)))
    table = pq.read_table(next(Path(template, "data").glob("*.parquet")))
    row = table.slice(0, 1).to_pylist()[0]
    maps = decode_token_maps(table.column("token_maps")[0])
    features = run_features(info.settings, info.map_size)
    layout = OutputLayout(out)
    specs = plan_shards(rows, shard_size)
    info.shards = len(specs)
    layout.write_json_atomic(layout.path(RUN_FILE), info.to_dict())
    rng = np.random.default_rng(0)
    for spec in specs:
        records = [
            Record(id=f"row-{i:09d}", prompt_id=f"row-{i:09d}", prompt=f"{row['prompt']} {i}", negative_prompt="",
                   seed=i, image_index=0, png=row["image"]["bytes"], tokens=row["tokens"], token_ids=row["token_ids"],
                   token_maps=rng.random(maps.shape, dtype=np.float32).astype(maps.dtype), words=row["words"],
                   truncated=False, overlay_jpeg=(row.get("overlay") or {}).get("bytes"), overlay_words=row.get("overlay_words"))
            for i in range(spec.start, spec.stop)
        ]
        commit_shard(layout, ShardResult(spec, records), info.settings["formats"], features, info.fingerprint)
    write_card(layout, output_card(layout, collect_stats(layout)))
    return {"shards": len(specs), "bytes": sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())}


def child(command: str, out: str, template: str, rows: int, shard_size: int) -> dict[str, Any]:
    """One command on the output ``out``, timed, in this fresh process (the base RSS is taken after
    the imports every command shares)."""
    import datasets  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import pipeline.cli  # noqa: F401
    import pipeline.validate  # noqa: F401
    import transforms.shards.sinks  # noqa: F401

    base = status_kib("VmRSS:") * 1024
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if command == "write":
        extra = write_output(template, out, rows, shard_size)
    elif command in ("validate", "validate_sample"):
        from pipeline.validate import validate_output

        extra = {"problems": len(validate_output(out, sample=10 if command == "validate_sample" else None))}
    elif command == "preview":
        from pipeline.cli import main

        extra = {"exit": main(["preview", out, "--n", "48", "--no-card"])}
    elif command == "publish_plan":
        from pipeline.cli import main

        extra = {"exit": main(["publish", out, "--to", str(Path(out).parent / "published"), "--dry-run"])}
    elif command == "load_dataset":
        import datasets

        dataset = datasets.load_dataset(out, split="train", cache_dir=str(Path(out).parent / "hf-cache"))
        extra = {"rows": len(dataset), "last_id": dataset[len(dataset) - 1]["id"]}
    seconds = time.perf_counter() - start
    return {"base_bytes": base, "peak_bytes": status_kib("VmHWM:") * 1024, "seconds": seconds, **extra}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--child", choices=COMMANDS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--template", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.out, args.template, args.rows, args.shard_size)))
        return {}
    folder = Path(tempfile.mkdtemp(prefix="output-scale-"))
    rows_out = []
    try:
        template = make_template(folder)
        for size in (int(s) for s in args.sizes.split(",")):
            out = folder / f"out-{size}"
            row: dict[str, Any] = {"rows": size}
            for command in COMMANDS:
                row[command] = json_subprocess("benchmarks.output_scale", [
                    "--child", command, "--out", str(out), "--template", str(template), "--rows", str(size),
                    "--shard-size", str(args.shard_size)])
                r = row[command]
                r["growth_mib"] = (r["peak_bytes"] - r["base_bytes"]) / 2**20
                r["us_per_row"] = r["seconds"] / size * 1e6
                print(f"{size:>10,} rows  {command:<16} {r['seconds']:8.1f} s  {r['us_per_row']:7.1f} us/row  "
                      f"peak RSS base + {r['growth_mib']:.0f} MiB", flush=True)
            rows_out.append(row)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(folder / "hf-cache", ignore_errors=True)
            shutil.rmtree(folder / "published", ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    largest = rows_out[-1]
    result = result_record(
        "output_scale", max(largest[c]["growth_mib"] for c in COMMANDS if c != "load_dataset"), "cpu",
        ratio_is="the largest peak RSS growth (MiB) of write/validate/preview/publish planning at the largest size",
        settings=vars(args), rows=rows_out,
    )
    path = write_result("output_scale", result)
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()
