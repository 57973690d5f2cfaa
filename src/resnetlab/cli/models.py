"""`resnetlab models` and `resnetlab summary`: the registry and per-stage counts against the paper."""

from __future__ import annotations

import argparse
import json

from resnetlab.analysis.counts import summarize
from resnetlab.errors import UserError
from resnetlab.models.zoo import create_model, list_models, model_info

NATIVE_SIZE = {"cifar": 32, "imagenet": 224}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered networks with depth, params, multiply-adds")
    p.add_argument("pattern", nargs="?", help="glob or substring, e.g. 'plain*' or 'resnet1'")
    p.set_defaults(func=run_models)

    p = sub.add_parser("summary", help="per-stage output shape, params and multiply-adds of a network")
    p.add_argument("model", help="a registered name (see `resnetlab models`)")
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="input height = width in pixels (default: 32 for CIFAR nets, 224 for ImageNet)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run_summary)


def _millions(n: float) -> str:
    return f"{n / 1e6:.2f}M"


def _giga(n: float) -> str:
    return f"{n / 1e9:.3f}G" if n >= 1e8 else f"{n / 1e6:.2f}M"


def run_models(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no registered model matches {args.pattern!r} (see `resnetlab models`)")
    print(f"{'name':<11} {'family':<9} {'depth':>5} {'kind':<8} {'params':>9} {'mult-adds':>10}  input")
    for name in names:
        info = model_info(name)
        size = NATIVE_SIZE[info.family]
        total = summarize(create_model(name), size)[-1]
        kind = "residual" if info.spec["residual"] else "plain"
        print(
            f"{name:<11} {info.family:<9} {info.depth:>5} {kind:<8} {_millions(total.params):>9} "
            f"{_giga(total.macs):>10}  {size}x{size}",
            flush=True,
        )
    return 0


def run_summary(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    size = NATIVE_SIZE[info.family] if args.input_size is None else args.input_size
    if size < 1:
        raise UserError(f"--input-size must be a positive number of pixels, got {size}")
    model = create_model(args.model)
    try:
        rows = summarize(model, size)
    except RuntimeError as exc:
        raise UserError(
            f"{args.model} cannot run on {size}x{size} inputs: {str(exc).splitlines()[0]}"
        ) from None
    total = rows[-1]
    # The paper's macs (Table 1) are for 224x224 inputs only; its params (Table 6) at any size.
    paper_macs = info.paper_macs if size == 224 else None
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "input_size": size,
                    "params": total.params,
                    "macs": total.macs,
                    "paper_params": info.paper_params,
                    "paper_macs": paper_macs,
                    "paper_error": info.paper_error,
                    "config": info.spec | {"layers": list(info.spec["layers"])},
                    "stages": [
                        {
                            "name": r.name,
                            "output_shape": list(r.output_shape),
                            "params": r.params,
                            "macs": r.macs,
                        }
                        for r in rows[:-1]
                    ],
                }
            )
        )
        return 0
    print(f"{args.model}: {info.family} net, depth {info.depth}, input 3x{size}x{size}")
    print(f"{'part':<8} {'output':<14} {'params':>12} {'mult-adds':>15}")
    for r in rows:
        shape = "x".join(str(d) for d in r.output_shape)
        print(f"{r.name:<8} {shape:<14} {r.params:>12,} {r.macs:>15,}")
    if info.paper_params:
        print(f"paper params: {_millions(info.paper_params)} (ours {_millions(total.params)}, {info.source})")
    if paper_macs:
        diff = 100 * (total.macs - paper_macs) / paper_macs
        print(f"paper multiply-adds: {_giga(paper_macs)} (ours {_giga(total.macs)}, {diff:+.1f}%, Table 1)")
    if info.paper_error is not None:
        print(f"paper test error: {info.paper_error}% ({info.source})")
    return 0
