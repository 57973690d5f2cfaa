"""`resnetlab predict`: the five most probable classes of each image file, from a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnetlab.errors import UserError
from resnetlab.evaluation import predict_images
from resnetlab.weights import WEIGHTS_HELP, load_weights


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-5 classes with probabilities for image files")
    p.add_argument("checkpoint", help=WEIGHTS_HELP)
    p.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="image files (any format Pillow reads)"
    )
    p.add_argument("--top", type=int, default=5, help="how many classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    ckpt = load_weights(args.checkpoint)
    predictions = predict_images(ckpt, args.images, top=args.top)
    for path, top in zip(args.images, predictions, strict=True):
        if args.json:
            print(json.dumps({"image": str(path), "top": [{"class": c, "probability": p} for c, p in top]}))
            continue
        print(f"{path}:")
        for rank, (name, prob) in enumerate(top, 1):
            print(f"  {rank}. {name:<20} {100 * prob:6.2f}%")
    return 0
