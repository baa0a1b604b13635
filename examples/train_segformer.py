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

from transforms.layout import ID2LABEL_FILE
from transforms.training import IGNORE_INDEX, MeanIoU, collate, segmentation_dataset, segmentation_transforms

log = logging.getLogger("train_segformer")
Model = SegformerForSemanticSegmentation
Batch = tuple[torch.Tensor, torch.Tensor]
HEADLINE = {"include": "background_included", "exclude": "background_excluded"}  # --background → metric


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="output folder of `daam-datasets run --classes` or a Hub dataset id")
    parser.add_argument("--config", default="segmentation", help="dataset config (default: segmentation)")
    parser.add_argument("--id2label", type=Path, help=f"label names (default: {ID2LABEL_FILE} beside the data)")
    parser.add_argument("--model", help="checkpoint to fine-tune (from_pretrained); default: a tiny random SegFormer")
    parser.add_argument("--image-size", type=int, default=256, help="side of the square training images (default: 256)")
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
    args = parser.parse_args(argv)
    for name in ("image_size", "batch_size", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    if not 0 < args.validation_fraction < 1:
        parser.error("--validation-fraction must be in (0, 1)")
    return args


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
        "metrics": {
            "background_included": report(metrics["background_included"], names),
            "background_excluded": report(metrics["background_excluded"], names[1:]),
        },
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.save:
        model.save_pretrained(args.save)
    return results


def cli() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    results = main()
    miou = results["mean_iou"]
    print(
        f"{results['steps']} steps, loss {results['losses'][0]:.4f} -> {results['losses'][-1]:.4f}; "
        f"mIoU ({HEADLINE[results['background']].replace('_', ' ')}) {'n/a' if miou is None else f'{miou:.4f}'} "
        f"on {results['held_out_rows']} held-out rows"
    )


if __name__ == "__main__":
    cli()
