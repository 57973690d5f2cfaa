"""`resnetlab export`: a checkpoint's weights as safetensors (+ config JSON) or as an ONNX graph."""

from __future__ import annotations

import argparse
from pathlib import Path

from resnetlab.weights import WEIGHTS_HELP, load_weights, output_dir
from resnetlab.weights.export import FORMATS, export_onnx, export_safetensors


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint as safetensors + config JSON, or ONNX")
    p.add_argument("checkpoint", help=WEIGHTS_HELP)
    p.add_argument("--format", choices=FORMATS, default="safetensors")
    p.add_argument(
        "--out",
        type=Path,
        help="output file (default: MODEL.safetensors or MODEL.onnx beside the checkpoint; "
        "runs/pretrained-NAME-TAG/ for registry weights)",
    )
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    ckpt = load_weights(args.checkpoint)
    out = args.out or output_dir(ckpt) / f"{ckpt['model_name']}.{args.format}"
    if args.format == "safetensors":
        weights, config = export_safetensors(ckpt, out)
        print(f"wrote {weights} and {config} (ResNet(**json['model_config']) rebuilds the network)")
    else:
        print(f"wrote {export_onnx(ckpt, out)} (input 'images': normalised (N, 3, H, W); output 'logits')")
    return 0
