"""Fine-tune SegFormer on the ``segmentation`` config of a daam-datasets output and report mIoU.

    python examples/train_segformer.py out/voc --epochs 20 --image-size 256 --json out/voc/segformer.json
    python examples/train_segformer.py out/voc --model nvidia/mit-b0 --learning-rate 6e-5 ...
    python examples/train_segformer.py org/dataset ...          # a Hub dataset id

Data: ``load_dataset(DATASET, "segmentation")`` (``image``, ``label``: 0 background, 1..K, 255
ignore) written by ``daam-datasets run --classes``; labels are named by ``id2label.json`` beside the
data (``--id2label`` to give another). Held out: the dataset's ``validation`` split if it has one,
else a deterministic ``--validation-fraction`` of ``train`` (split with ``--seed``).

Model: without ``--model`` a tiny ``SegformerConfig`` with random weights (offline, seconds on a
CPU: a smoke test of the data, not a segmenter); with ``--model`` a checkpoint's weights
(``from_pretrained``, a new decode head for our labels). A plain torch loop: AdamW at a constant
learning rate, ``--epochs`` passes or ``--max-steps`` optimizer steps (which wins when given),
mean training loss logged per epoch. Images are resized to ``--image-size`` (labels by nearest
neighbour), flipped at random for training and normalised with ImageNet statistics (SegFormer's).

mIoU (``transforms.training.metrics.mean_iou``, Hugging Face ``evaluate``'s semantics) at
``--image-size`` on the held-out rows, both ways, in ``--json`` under ``metrics``:

* ``background_included``: every label 0..K is a class; only 255 is ignored (the VOC convention,
  right for DAAM labels where background is a real prediction).
* ``background_excluded``: pixels labelled background are not scored and the mean is over 1..K
  (evaluate's ``reduce_labels``, the ADE20K convention). transformers' semantic-segmentation
  script gets near this with ``ignore_index=0``, though there class 0 stays in its mean (at IoU 0
  once a foreground pixel is predicted background) and 255 pixels are scored.

``--background`` picks which one the last line prints as ``mean_iou``.

Colour-world mode: the weak-supervision loop measured against the truth (issue 14)::

    python examples/train_segformer.py --colour-world --train-images 720 --test-images 120 \
        --max-steps 1500 --json out/colour-world-segformer.json
    python examples/train_segformer.py --colour-world --colour-world-model PATH ...   # a saved folder

No DATASET: ``--colour-world-model`` (``colour-world``, the shipped trained weights, or a
``ColourWorldPipeline`` folder) generates ``--train-images`` images of the 60 training prompts
and ``--test-images`` of the 12 held-out ones (``transforms.colour_world.segmentation_data``:
DDIM 20 steps, no CFG, traced with the ``colours`` classes, no refinement). Two SegFormers of
one config, seed and step count are trained on the same training images, one on their DAAM
pseudo-masks, one on their true masks (nearest palette colour); both are scored on the true
masks of the held-out images (``held_out_miou``, both ways), beside the pseudo-masks' own mIoU
against the truth (``pseudo_mask_miou``, on the training and the held-out images). Labels: 0
background, 1 red, 2 green, 3 blue, 4 yellow. ``--image-size`` defaults to 64 here (the images
are 32 px); ``--save DIR`` writes ``DIR/pseudo`` and ``DIR/truth``. Other worlds and label
recipes: ``--colour-world-model colour-world-sa --refine-factor 1 --refine-power 1
--label-threshold 0.4`` (refined pseudo-masks), ``--colour-world-model colour-world-dit
--label-maps concept`` (ConceptAttention pseudo-masks); the recipe is in the JSON
(``generation.label_recipe``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from transforms.shards.layout import ID2LABEL_FILE
from transforms.models.family import COLOUR_WORLD_MODEL_NAME
from transforms.training import IGNORE_INDEX, MeanIoU, collate, segmentation_dataset, segmentation_transforms

log = logging.getLogger("train_segformer")
Model = SegformerForSemanticSegmentation
Batch = tuple[torch.Tensor, torch.Tensor]
HEADLINE = {"include": "background_included", "exclude": "background_excluded"}  # --background → metric
IMAGE_SIZE = {"dataset": 256, "colour_world": 64}  # --image-size default per mode
LABEL_KINDS = ("pseudo", "truth")  # colour-world: the two training sets, pseudo-masks first
HELD_OUT_SEED_OFFSET = 1_000_000  # colour-world held-out images: seeds --seed + this + i


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dataset", nargs="?", help="output folder of `daam-datasets run --classes` or a Hub dataset id (not with --colour-world)"
    )
    parser.add_argument("--config", default="segmentation", help="dataset config (default: segmentation)")
    parser.add_argument("--id2label", type=Path, help=f"label names (default: {ID2LABEL_FILE} beside the data)")
    parser.add_argument("--model", help="checkpoint to fine-tune (from_pretrained); default: a tiny random SegFormer")
    parser.add_argument(
        "--image-size", type=int,
        help=f"side of the square training images (default: {IMAGE_SIZE['dataset']}, "
        f"{IMAGE_SIZE['colour_world']} with --colour-world)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides --epochs)")
    parser.add_argument("--learning-rate", type=float, default=6e-5)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="held out of train without a validation split")
    parser.add_argument("--background", choices=("include", "exclude"), default="include", help="the printed mIoU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--reload", action="store_true",
        help="rebuild datasets' cache of the data: it is keyed by the folder's name and card, not its files, "
        "so a folder rewritten in place (or another of the same name and card) can read stale rows",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--save", type=Path, help="save the fine-tuned model here (save_pretrained)")
    world = parser.add_argument_group("colour-world mode (see the module docstring)")
    world.add_argument(
        "--colour-world", action="store_true",
        help="generate colour-world images and train on their DAAM pseudo-masks and on their true masks, side by side",
    )
    world.add_argument(
        "--colour-world-model", default=COLOUR_WORLD_MODEL_NAME,
        help="'colour-world' (the shipped weights) or a ColourWorldPipeline folder (default: colour-world)",
    )
    world.add_argument("--train-images", type=int, default=720, help="generated training images (default: 720)")
    world.add_argument("--label-maps", choices=("daam", "concept"), default="daam",
                       help="pseudo-masks from DAAM maps or ConceptAttention maps (colour-world-dit)")
    world.add_argument("--refine-factor", type=int, default=None, help="refine the pseudo-masks at this self-attention factor (colour-world-sa)")
    world.add_argument("--refine-power", type=int, default=None, help="power of the refinement (with --refine-factor; default 4)")
    world.add_argument("--label-threshold", type=float, default=None, help="label threshold of the pseudo-masks (default 0.6)")
    world.add_argument("--test-images", type=int, default=120, help="generated held-out images (default: 120)")
    args = parser.parse_args(argv)
    if args.colour_world and args.dataset is not None:
        parser.error("give DATASET or --colour-world, not both")
    if not args.colour_world and args.dataset is None:
        parser.error("give DATASET (or --colour-world)")
    if args.image_size is None:
        args.image_size = IMAGE_SIZE["colour_world" if args.colour_world else "dataset"]
    for name in ("train_images", "test_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("image_size", "batch_size", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    if not 0 < args.validation_fraction < 1:
        parser.error("--validation-fraction must be in (0, 1)")
    if args.refine_power is not None and args.refine_factor is None:
        parser.error("--refine-power goes with --refine-factor")
    if args.label_threshold is not None and not 0 < args.label_threshold <= 1:
        parser.error("--label-threshold must be in (0, 1]")
    return args


def label_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The pseudo-masks' label rule (``SegmentationConfig`` fields) from the colour-world flags."""
    recipe: dict[str, Any] = {"label_maps": args.label_maps}
    if args.refine_factor is not None:
        recipe.update(refine=True, refine_factor=args.refine_factor)
        if args.refine_power is not None:
            recipe["power"] = args.refine_power
    if args.label_threshold is not None:
        recipe.update(threshold=args.label_threshold, ignore_low=min(0.5, args.label_threshold))
    return recipe


def load_id2label(dataset: str, path: Path | None = None) -> dict[int, str]:
    """``{label id: name}`` from ``path``, else ``id2label.json`` of the local folder or Hub dataset."""
    if path is None and Path(dataset).is_dir():
        path = Path(dataset) / ID2LABEL_FILE
    if path is None:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(dataset, ID2LABEL_FILE, repo_type="dataset"))
    if not path.is_file():
        raise SystemExit(f"error: no {path} (a run with --classes writes it; or pass --id2label)")
    id2label = {int(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    if sorted(id2label) != list(range(len(id2label))) or len(id2label) < 2:
        raise SystemExit(f"error: {path} must name labels 0..K (K >= 1), got ids {sorted(id2label)}")
    return id2label


def load_splits(
    dataset: str, config: str, validation_fraction: float, seed: int, reload: bool = False
) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """Train and held-out rows, and where the held-out rows come from."""
    # --reload: rebuild the cache; its recorded split sizes are the stale ones, so they are not checked
    fresh = {"download_mode": "force_redownload", "verification_mode": "no_checks"} if reload else {}
    splits = load_dataset(dataset, config, **fresh)
    if "validation" in splits:
        return splits["train"], splits["validation"], "validation"
    if len(splits["train"]) < 2:
        raise SystemExit(f"error: {len(splits['train'])} row(s) in train: too few to hold any out")
    parts = splits["train"].train_test_split(test_size=validation_fraction, seed=seed)
    return parts["train"], parts["test"], f"{validation_fraction:g} of train (seed {seed})"


def tiny_config(id2label: dict[int, str]) -> SegformerConfig:
    """A two-stage SegFormer of a few thousand weights (random initialisation)."""
    return SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        **label_config(id2label),
    )


def label_config(id2label: dict[int, str]) -> dict[str, Any]:
    return {
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {name: i for i, name in id2label.items()},
        "semantic_loss_ignore_index": IGNORE_INDEX,
    }


def build_model(id2label: dict[int, str], checkpoint: str | None = None, seed: int = 0) -> Model:
    """A SegFormer for our labels: ``checkpoint``'s weights (new head), or the tiny random one."""
    torch.manual_seed(seed)
    if checkpoint is None:
        return Model(tiny_config(id2label))
    return Model.from_pretrained(checkpoint, ignore_mismatched_sizes=True, **label_config(id2label))


def train_step(model: Model, optimizer: torch.optim.Optimizer, batch: Batch, device: str) -> float:
    """One optimizer step on ``(images, labels)``; the loss before it."""
    model.train()
    images, labels = (t.to(device) for t in batch)
    loss = model(pixel_values=images, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train(model: Model, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The training loop: per-step losses and each epoch's mean loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    shuffle = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        data, args.batch_size, shuffle=True, generator=shuffle, collate_fn=collate, num_workers=args.num_workers
    )
    epochs = math.ceil(args.max_steps / len(loader)) if args.max_steps else args.epochs
    losses: list[float] = []
    history = []
    for epoch in range(epochs):
        data.set_epoch(epoch)
        start, first = time.perf_counter(), len(losses)
        remaining = args.max_steps - len(losses) if args.max_steps else None
        for batch in itertools.islice(loader, remaining):
            losses.append(train_step(model, optimizer, batch, args.device))
            log.debug("step %d: loss %.4f", len(losses), losses[-1])
        steps = len(losses) - first
        history.append({"epoch": epoch + 1, "steps": steps, "loss": sum(losses[first:]) / steps})
        log.info(
            "epoch %d/%d: %d steps, mean loss %.4f (%.1f s)",
            epoch + 1, epochs, steps, history[-1]["loss"], time.perf_counter() - start,
        )
    return {"steps": len(losses), "losses": losses, "epochs": history}


@torch.no_grad()
def evaluate(model: Model, data: Any, num_labels: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """mIoU of ``data`` with background included and excluded (see the module docstring)."""
    model.eval()
    included, excluded = MeanIoU(num_labels), MeanIoU(num_labels - 1, reduce_labels=True)
    for images, labels in DataLoader(data, args.batch_size, collate_fn=collate, num_workers=args.num_workers):
        logits = model(pixel_values=images.to(args.device)).logits
        logits = torch.nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        predictions = logits.argmax(1).cpu().numpy()
        included.update(predictions, labels.numpy())
        excluded.update(predictions - 1, labels.numpy())  # in reduced labels background is -1: no class
    return {"background_included": included.compute(), "background_excluded": excluded.compute()}


def _plain(value: Any) -> Any:
    """JSON-ready numbers: NaN becomes null."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def report(metrics: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A metric result with per-category values keyed by class name."""
    result = {key: _plain(value) for key, value in metrics.items() if not key.startswith("per_category")}
    for key in ("per_category_iou", "per_category_accuracy"):
        result[key] = dict(zip(names, _plain(metrics[key])))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, evaluate, write ``--json``; returns the results."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.colour_world:
        return main_colour_world(args)
    id2label = load_id2label(args.dataset, args.id2label)
    train_rows, held_out_rows, held_out = load_splits(args.dataset, args.config, args.validation_fraction, args.seed, args.reload)
    log.info("%d training rows, %d held out (%s); labels %s", len(train_rows), len(held_out_rows), held_out, id2label)
    model = build_model(id2label, args.model, args.seed).to(args.device)
    train_data = segmentation_dataset(train_rows, transforms=segmentation_transforms(args.image_size, train=True), seed=args.seed)
    held_out_data = segmentation_dataset(held_out_rows, transforms=segmentation_transforms(args.image_size, train=False))
    training = train(model, train_data, args)
    metrics = evaluate(model, held_out_data, len(id2label), args)
    names = [id2label[i] for i in range(len(id2label))]
    results = {
        "dataset": args.dataset,
        "config": args.config,
        "model": args.model or "tiny SegformerConfig, random weights",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "train_rows": len(train_rows),
        "held_out_rows": len(held_out_rows),
        "held_out": held_out,
        "id2label": {str(i): name for i, name in id2label.items()},
        **training,
        "background": args.background,
        "mean_iou": _plain(metrics[HEADLINE[args.background]]["mean_iou"]),
        "metrics": both_ways(metrics, names),
    }
    write_json(results, args.json)
    if args.save:
        model.save_pretrained(args.save)
    return results


def write_json(results: dict[str, Any], path: Path | None) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def both_ways(metrics: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """``evaluate``'s (or ``label_miou``'s) two results as JSON, per-category values by name."""
    return {
        "background_included": report(metrics["background_included"], names),
        "background_excluded": report(metrics["background_excluded"], names[1:]),
    }


def main_colour_world(args: argparse.Namespace) -> dict[str, Any]:
    """``--colour-world``: generate, train on pseudo-masks and on true masks, score both on the
    held-out images' true masks (see the module docstring)."""
    from transforms.colour_world import segmentation_data as cw
    from transforms.colour_world.scenes import HELD_OUT_PROMPTS, TRAIN_PROMPTS
    from transforms.models.loading import ModelLoadError, ModelSpec, load_pipeline

    try:
        pipe = load_pipeline(ModelSpec(args.colour_world_model, device=args.device))
    except ModelLoadError as error:
        raise SystemExit(f"error: {error} (--colour-world-model)") from None
    if type(pipe).__name__ not in ("ColourWorldPipeline", "ColourWorldDiTPipeline"):
        raise SystemExit(
            f"error: --colour-world-model {args.colour_world_model} is a {type(pipe).__name__}, not a colour-world model"
        )
    start = time.perf_counter()
    recipe = label_recipe(args)
    try:
        train_set = cw.generate_set(pipe, TRAIN_PROMPTS, args.train_images, args.seed, recipe=recipe)
    except ValueError as error:  # a recipe the model cannot take (refinement without self-attention, ...)
        raise SystemExit(f"error: {error}") from None
    test_set = cw.generate_set(pipe, HELD_OUT_PROMPTS, args.test_images, args.seed + HELD_OUT_SEED_OFFSET, recipe=recipe)
    log.info("generated %d training and %d held-out images (%.1f s)", len(train_set), len(test_set), time.perf_counter() - start)
    names = [cw.ID2LABEL[i] for i in range(cw.NUM_LABELS)]
    pseudo_miou = {
        "train": both_ways(cw.label_miou(train_set.pseudo, train_set.truth), names),
        "held_out": both_ways(cw.label_miou(test_set.pseudo, test_set.truth), names),
    }
    test_data = segmentation_dataset(test_set.dataset("truth"), transforms=segmentation_transforms(args.image_size, train=False))
    segformers: dict[str, Any] = {}
    for kind in LABEL_KINDS:
        model = build_model(cw.ID2LABEL, args.model, args.seed).to(args.device)
        train_data = segmentation_dataset(
            train_set.dataset(kind), transforms=segmentation_transforms(args.image_size, train=True), seed=args.seed
        )
        log.info("training on %s masks", kind)
        training = train(model, train_data, args)
        metrics = evaluate(model, test_data, cw.NUM_LABELS, args)
        segformers[kind] = {**training, "metrics": both_ways(metrics, names)}
        if args.save:
            model.save_pretrained(args.save / kind)
    held_out = {kind: {way: segformers[kind]["metrics"][way]["mean_iou"] for way in HEADLINE.values()} for kind in LABEL_KINDS}
    headline = HEADLINE[args.background]
    pseudo, truth = held_out["pseudo"][headline], held_out["truth"][headline]
    results = {
        "mode": "colour-world",
        "colour_world_model": args.colour_world_model,
        "model": args.model or "tiny SegformerConfig, random weights",
        "generation": {
            "steps": cw.STEPS, "guidance_scale": cw.GUIDANCE_SCALE, "classes": cw.CLASS_LIST, "label_recipe": recipe,
            "train_prompts": len(TRAIN_PROMPTS), "held_out_prompts": len(HELD_OUT_PROMPTS),
            "train_seeds": [train_set.seeds[0], train_set.seeds[-1]], "held_out_seeds": [test_set.seeds[0], test_set.seeds[-1]],
        },
        "train_images": len(train_set),
        "test_images": len(test_set),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "id2label": {str(i): name for i, name in cw.ID2LABEL.items()},
        "labelled_fraction": {
            "pseudo": cw.labelled_fraction(train_set.pseudo),
            "truth": cw.labelled_fraction(train_set.truth),
            "held_out_truth": cw.labelled_fraction(test_set.truth),
        },
        "background": args.background,
        # held-out mIoU on true masks of the SegFormer trained on each label kind, both ways
        "held_out_miou": held_out,
        # truth minus pseudo, in mIoU points, of the --background way (the goal: <= 10)
        "gap_points": None if pseudo is None or truth is None else 100 * (truth - pseudo),
        # the pseudo-masks themselves against the pixel truth
        "pseudo_mask_miou": pseudo_miou,
        "segformer": segformers,
    }
    write_json(results, args.json)
    return results


def cli() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    results = main()
    if results.get("mode") == "colour-world":
        print_colour_world(results)
        return
    miou = results["mean_iou"]
    print(
        f"{results['steps']} steps, loss {results['losses'][0]:.4f} -> {results['losses'][-1]:.4f}; "
        f"mIoU ({HEADLINE[results['background']].replace('_', ' ')}) {'n/a' if miou is None else f'{miou:.4f}'} "
        f"on {results['held_out_rows']} held-out rows"
    )


def print_colour_world(results: dict[str, Any]) -> None:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    way = HEADLINE[results["background"]]
    print(
        f"colour-world: {results['train_images']} training images, {results['test_images']} held-out; "
        "mIoU on held-out true masks"
    )
    print(f"{'trained on':<14}{'bg included':>12}{'bg excluded':>12}{'steps':>7}  loss")
    for kind in LABEL_KINDS:
        run, miou = results["segformer"][kind], results["held_out_miou"][kind]
        print(
            f"{kind + ' masks':<14}{fmt(miou['background_included']):>12}{fmt(miou['background_excluded']):>12}"
            f"{run['steps']:>7}  {run['losses'][0]:.4f} -> {run['losses'][-1]:.4f}"
        )
    for split, metrics in results["pseudo_mask_miou"].items():
        print(
            f"pseudo-masks vs truth ({split}): {fmt(metrics['background_included']['mean_iou'])} bg included, "
            f"{fmt(metrics['background_excluded']['mean_iou'])} bg excluded"
        )
    gap = results["gap_points"]
    print(f"gap (true - pseudo, {way.replace('_', ' ')}): {'n/a' if gap is None else f'{gap:.1f}'} mIoU points")


if __name__ == "__main__":
    cli()
