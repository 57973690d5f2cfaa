"""`resnetlab models` and `resnetlab summary`: the registries of nets and pretrained weights, and
per-stage counts against the paper."""

from __future__ import annotations

import argparse
import json

from resnetlab.analysis.counts import summarize
from resnetlab.errors import UserError
from resnetlab.models.zoo import build_model, list_models, model_info
from resnetlab.weights import WeightsCard, card_record, list_weights
from resnetlab.weights.card import CIFAR10

NATIVE_SIZE = {"cifar": 32, "imagenet": 224}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="list the registered networks (depth, params, multiply-adds) or pretrained weights"
    )
    p.add_argument("pattern", nargs="?", help="glob or substring, e.g. 'plain*' or 'resnet1'")
    p.add_argument(
        "--pretrained", action="store_true", help="list the pretrained weights with their cards instead"
    )
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
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
    if args.pretrained:
        return run_pretrained(args)
    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no registered model matches {args.pattern!r} (see `resnetlab models`)")
    if not args.json:
        print(f"{'name':<11} {'family':<9} {'depth':>5} {'kind':<8} {'params':>9} {'mult-adds':>10}  input")
    rows = []
    for name in names:
        info = model_info(name)
        size = NATIVE_SIZE[info.family]
        total = summarize(build_model(name), size)[-1]
        kind = "residual" if info.spec["residual"] else "plain"
        rows.append(
            {"name": name, "family": info.family, "depth": info.depth, "kind": kind}
            | {"params": total.params, "macs": total.macs, "input_size": size}
        )
        if not args.json:
            print(
                f"{name:<11} {info.family:<9} {info.depth:>5} {kind:<8} {_millions(total.params):>9} "
                f"{_giga(total.macs):>10}  {size}x{size}",
                flush=True,
            )
    if args.json:
        print(json.dumps(rows))
    return 0


def run_pretrained(args: argparse.Namespace) -> int:
    cards = list_weights(args.pattern)
    if not cards:
        raise UserError(f"no pretrained weights match {args.pattern!r} (see `resnetlab models --pretrained`)")
    if args.json:
        print(json.dumps([card_record(c) for c in cards]))
        return 0
    print("\n".join(accuracy_table(cards)))
    for card in cards:
        print("\n" + "\n".join(card_lines(card)))
    return 0


def accuracy_table(cards: list[WeightsCard]) -> list[str]:
    """One line per card: its top-1 on the official CIFAR-10 test set beside the paper's for the net."""
    width = max(len(c.ref) for c in cards)
    lines = [
        f"{'weights':<{width}}  {'default':<7}  {'official test top-1':>19}  {'paper top-1':>11}  "
        "official result by"
    ]
    for card in cards:
        record = card_record(card)
        official = card.result_on(CIFAR10)
        ours = "not measured" if official is None else f"{official.top1:.2f}%"
        paper = "-" if record["paper_top1"] is None else f"{record['paper_top1']:.2f}%"
        lines.append(
            f"{card.ref:<{width}}  {'yes' if record['default'] else '':<7}  {ours:>19}  {paper:>11}  "
            + ("-" if official is None else official.by)
        )
    lines.append(
        "paper top-1: 100 minus the paper's test error for the net (Table 6; ResNet-110: the best of 5 "
        "runs); it gives none for plain nets, which appear only as curves in Fig. 6"
    )
    return lines


def card_lines(card: WeightsCard) -> list[str]:
    """A weight card as text: what it is, how to feed it, how good it is, where it comes from."""
    info = card_record(card)
    default = f"  (default: create_model({card.model!r}, pretrained=True))" if info["default"] else ""
    if card.normalization == "per-channel":
        norm = f"per-channel mean {_floats(card.mean)} std {_floats(card.std)} of x/255"
    else:
        norm = f"{card.normalization} mean (stored in the config JSON)"
    shown = ", ".join(card.classes[:10]) + (", ..." if len(card.classes) > 10 else "")
    lines = [
        f"{card.ref}{default}",
        f"  publisher  {card.publisher}; licence {card.license}; {card.source}",
        f"  trained on {card.dataset} (eval default --dataset {card.dataset_spec})",
        f"  input      3x{card.image_size[0]}x{card.image_size[1]}, {norm}",
        f"  classes    {len(card.classes)}: {shown}",
    ]
    for r in card.results:
        top5 = "" if r.top5 is None else f", top-5 {r.top5:.2f}%"
        lines.append(f"  accuracy   top-1 {r.top1:.2f}%{top5} on {r.test_set} ({r.by})")
    iterations = f"{card.iterations:,} iterations: " if card.iterations else ""
    lines.append(f"  recipe     {iterations}{card.recipe}")
    digest = card.sha256 if len(card.sha256) == 64 else f"{card.sha256}... (only this prefix is published)"
    lines.append(f"  file       {info['location']}, SHA-256 {digest}")
    if card.convert_from:
        lines.append(f"             downloaded and converted from {card.convert_from}'s layout on first use")
    return lines


def _floats(values: tuple[float, ...] | None) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values or ()) + "]"


def run_summary(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    size = NATIVE_SIZE[info.family] if args.input_size is None else args.input_size
    if size < 1:
        raise UserError(f"--input-size must be a positive number of pixels, got {size}")
    model = build_model(args.model)
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
