"""`resnetlab convert`: another project's checkpoint as resnetlab weights (safetensors + config JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path

from resnetlab.weights.convert import AKAMASTER_MODELS, CONVERTERS
from resnetlab.weights.export import export_safetensors


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert another project's checkpoint into weights every command takes",
        description="Convert a published checkpoint, function-preserving, into a directory with the "
        "layout of `resnetlab export --format safetensors` (NAME.safetensors + NAME.json).",
    )
    p.add_argument("src", type=Path, metavar="SRC", help="the checkpoint file, e.g. resnet56-4bfd9763.th")
    p.add_argument(
        "--from",
        dest="source",
        choices=sorted(CONVERTERS),
        required=True,
        help="whose layout SRC is in: akamaster = github.com/akamaster/pytorch_resnet_cifar10",
    )
    p.add_argument("--model", required=True, help=f"the network SRC holds: {', '.join(AKAMASTER_MODELS)}")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write the weights to")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    ckpt = CONVERTERS[args.source](args.src, args.model)
    weights, config = export_safetensors(ckpt, args.out / f"{args.model}.safetensors")
    print(f"wrote {weights} and {config}")
    python = f"create_model({args.model!r}, pretrained={str(args.out)!r})"
    print(f"every command takes {args.out} (e.g. `resnetlab eval {args.out}`); in Python: {python}")
    return 0
