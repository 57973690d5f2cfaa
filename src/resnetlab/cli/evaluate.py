"""`resnetlab eval`: top-1/top-5 error, per-class accuracy and the confusion matrix of a checkpoint."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from resnetlab.atomic import atomic_write
from resnetlab.engine.config import DEVICES
from resnetlab.engine.precision import MEMORY_FORMATS, PRECISIONS
from resnetlab.errors import UserError
from resnetlab.evaluation import Evaluation, evaluate_checkpoint, save_confusion_png
from resnetlab.weights import WEIGHTS_HELP, load_weights, output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: errors, per-class accuracy, confusion matrix")
    p.add_argument("checkpoint", help=WEIGHTS_HELP)
    p.add_argument("--dataset", help="dataset spec (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir", help="where datasets and decoded caches are kept")
    p.add_argument("--split", choices=["test", "val"], help="default: test when the dataset has one")
    p.add_argument("--ten-crop", action="store_true", help="average the softmax of 10 views per image")
    p.add_argument("--flip", action="store_true", help="average the softmax of each image and its mirror")
    p.add_argument(
        "--out",
        type=Path,
        help="where eval-SPLIT.json and confusion-SPLIT.png go (default: beside the checkpoint; "
        "runs/pretrained-NAME-TAG for registry weights)",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 (default: the same score on every machine), bf16 autocast, or auto (bf16 where native)",
    )
    p.add_argument("--memory-format", choices=MEMORY_FORMATS, default="auto")
    p.set_defaults(func=run_eval)


def format_report(ev: Evaluation) -> str:
    """The printed report: errors, per-class accuracy and the confusion matrix as text."""
    r = ev.result
    views = "10-crop" if ev.ten_crop else "image + mirror" if ev.flip else "single view"
    lines = [
        f"{ev.split}: {r['images']} images, {views}, {ev.mode.describe()}",
        f"top-1 error {100 * r['top1_error']:.2f}%  top-5 error {100 * r['top5_error']:.2f}%  "
        f"loss {r['loss']:.4f}",
        "per-class accuracy:",
    ]
    width = max(len(c) for c in ev.classes)
    for name, acc in zip(ev.classes, r["per_class_accuracy"], strict=True):
        lines.append(f"  {name:<{width}}  " + ("  n/a" if math.isnan(acc) else f"{100 * acc:6.2f}%"))
    if len(ev.classes) <= 30:
        cell = max(5, len(str(max(max(row) for row in r["confusion"]))) + 1)
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        lines.append(" " * (width + 2) + "".join(f"{i:>{cell}}" for i in range(len(ev.classes))))
        for i, (name, row) in enumerate(zip(ev.classes, r["confusion"], strict=True)):
            lines.append(f"  {name:<{width}}" + "".join(f"{v:>{cell}}" for v in row) + f"   ({i})")
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> int:
    ckpt = load_weights(args.checkpoint)
    ev = evaluate_checkpoint(
        ckpt,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        ten_crop=args.ten_crop,
        flip=args.flip,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        memory_format=args.memory_format,
    )
    out = args.out or output_dir(ckpt)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {out}: {exc.strerror or exc}") from None
    stem = f"{ev.split}-10crop" if ev.ten_crop else f"{ev.split}-flip" if ev.flip else ev.split
    record = {"checkpoint": ckpt["origin"], "split": ev.split, "ten_crop": ev.ten_crop, "classes": ev.classes}
    record |= {"flip": ev.flip, "precision": ev.mode.precision, "memory_format": ev.mode.memory_format}
    record |= {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in ev.result.items()}
    record["per_class_accuracy"] = [None if math.isnan(a) else a for a in ev.result["per_class_accuracy"]]
    try:
        atomic_write(out / f"eval-{stem}.json", json.dumps(record, indent=1) + "\n")
        save_confusion_png(
            ev.result["confusion"], ev.classes, out / f"confusion-{stem}.png", f"{ckpt['origin']} ({stem})"
        )
    except OSError as exc:
        raise UserError(f"cannot write the evaluation to {out}: {exc.strerror or exc}") from None
    print(format_report(ev))
    print(f"saved {out / f'eval-{stem}.json'} and {out / f'confusion-{stem}.png'}")
    return 0
