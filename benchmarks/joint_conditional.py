"""Seconds per joint-attention layer call of the image -> text slice: the conditional images only
(``joint.record_text_maps`` today) vs the whole CFG batch with the unconditional half dropped by
the store afterwards (what it did before).

    python -m benchmarks.joint_conditional [--images 1] [--size 512] [--heads 24] [--head-dim 64]
        [--text 333] [--repeats 5] [--device auto]

Defaults are SD3-medium's layer at 512 px: 24 heads of 64, a 32x32 patch grid, 77 CLIP + 256 T5
text keys, CFG (batch ``2 * images``). ``ratio``: conditional-only seconds over whole-batch
seconds (paired timing, median). Writes benchmarks/results/joint_conditional.json.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import paired_times, resolve_device, result_record, synchronize, write_result
from transforms.attribution.config import TraceConfig
from transforms.attribution.joint import record_text_maps, text_key_maps
from transforms.attribution.store import HeatMapStore

PATCH_PIXELS = 16  # SD3: VAE factor 8 x patch size 2


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--text", type=int, default=333)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    side = args.size // PATCH_PIXELS
    image_len = side * side
    generator = torch.Generator("cpu").manual_seed(0)
    shape = (2 * args.images, args.heads, image_len + args.text, args.head_dim)
    query, key = (torch.randn(shape, generator=generator).to(device) for _ in range(2))
    image, text = slice(0, image_len), slice(image_len, None)
    store = HeatMapStore(TraceConfig())

    def conditional() -> None:
        store.begin(args.images, cfg=True, latent_size=(side, side))
        record_text_maps(store, "layer", query, key, image, text)
        synchronize(device)

    def whole_batch() -> None:
        store.begin(args.images, cfg=True, latent_size=(side, side))
        maps = text_key_maps(query, key, image, text, args.head_dim**-0.5)
        store.add_reduced("layer", maps, args.heads)
        synchronize(device)

    conditional()
    kept = store.sums["layer"].clone()
    whole_batch()
    max_difference = float((store.sums["layer"] - kept).abs().max())
    timing = paired_times(conditional, whole_batch, args.repeats)
    result = result_record(
        "joint_conditional", timing["ratio_median"], device,
        ratio_is="seconds per layer call, conditional images only over the whole CFG batch",
        settings=vars(args), timing=timing, max_abs_difference=max_difference,
    )
    path = write_result("joint_conditional", result)
    print(f"conditional only {timing['a_median']:.3f} s, whole batch {timing['b_median']:.3f} s per call "
          f"(ratio {timing['ratio_median']:.2f}, max |difference| {max_difference:.1e}); results: {path}")
    return result


if __name__ == "__main__":
    main()
