"""`resnetlab data info`: what a dataset spec resolves to (splits, classes, image size, cache)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from resnetlab.data.datasets import SPEC_HELP, load_dataset
from resnetlab.data.splits import DatasetSplits


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets (official CIFAR, image folders, ImageNet-style)")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    info = data_sub.add_parser("info", help="images per split, classes, image size and cache location")
    info.add_argument("--dataset", required=True, metavar="SPEC", help=SPEC_HELP)
    info.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="where archives and decoded caches live, or a folder holding a local CIFAR archive "
        "(default: $RESNETLAB_DATA_DIR, else ~/.cache/resnetlab)",
    )
    info.add_argument(
        "--skip-bad-images", action="store_true", help="leave unreadable images out (with a warning)"
    )
    info.add_argument("--no-download", action="store_true", help="fail instead of downloading CIFAR")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(func=run_info)


def _counts(data: DatasetSplits) -> dict[str, int]:
    """Images per split that exists, in-memory or streamed."""
    counts = {}
    for name in ("train", "val", "test"):
        split = getattr(data, name) if data.streams == {} else data.streams.get(name)
        if split is not None:
            counts[name] = len(split)
    return counts


def run_info(args: argparse.Namespace) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(
            args.dataset, args.data_dir, skip_bad_images=args.skip_bad_images, download=not args.no_download
        )
    for w in caught:
        print(f"resnetlab: warning: {w.message}", file=sys.stderr)
    counts = _counts(data)
    size = list(data.image_size) if data.image_size else None
    cache = str(data.cache_path) if data.cache_path else None
    if args.json:
        out = {"dataset": data.spec, "train": counts["train"], "test": counts.get("test")}
        if "val" in counts:
            out["val"] = counts["val"]
        out |= {"classes": data.classes, "image_size": size, "streamed": bool(data.streams), "cache": cache}
        print(json.dumps(out))
        return 0
    print(f"dataset  {data.spec}")
    for name, n in counts.items():
        print(f"{name:<8} {n:,} images")
    shown = ", ".join(data.classes[:20]) + (", ..." if len(data.classes) > 20 else "")
    print(f"classes  {len(data.classes)}: {shown}")
    if size:
        print(f"image    3x{size[0]}x{size[1]} (uint8, decoded in memory)")
    else:
        print("image    sizes vary: streamed and cropped to 224x224 per batch")
    print(f"cache    {cache or 'none'}")
    return 0
