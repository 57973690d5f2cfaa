"""Identity mappings (Sec. 3.1): hard for stacked nonlinear layers, free for residual blocks.

Part 1 trains K plain blocks and K residual blocks of the same width (the very same modules, with and
without the shortcut; each block is two conv-BN-ReLU layers) by SGD to reproduce their input maps,
and reports the error left. Part 2 is the paper's construction argument: a deeper net made of a
trained shallower one plus identity layers has exactly the shallower net's training error, so a
deeper plain net trained from scratch that does worse shows a failure of optimisation, not capacity.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.data.datasets import load_dataset
from resnetlab.engine.distributed import select_device
from resnetlab.errors import UserError
from resnetlab.experiments import degradation, finished_runs, records, shared_budget, training
from resnetlab.experiments.cifar_nets import CifarNet, check_depth
from resnetlab.experiments.options import Options
from resnetlab.experiments.stats import Stat, clearly_above
from resnetlab.models import ResNet
from resnetlab.models.blocks import BasicBlock
from resnetlab.reporting import figures
from resnetlab.reporting.report import PAPER_ITERATIONS, Figure, Section, Table, Verdict, budget_note

NAME = "identity"
CLAIM = (
    "'If the added layers can be constructed as identity mappings, a deeper model should have training "
    "error no greater than its shallower counterpart' (Sec. 1); degradation suggests that solvers have "
    "difficulties approximating identity mappings by multiple nonlinear layers, while a residual block "
    "only has to drive its weights toward zero (Sec. 3.1)."
)
LR, MOMENTUM, CLIP, WARMUP = 0.1, 0.9, 1.0, 0.2  # SGD for part 1: lr, momentum, grad-norm clip, warm-up share
BATCH, HELD_OUT = 32, 256  # maps per SGD step; maps the remaining error is measured on


def stack(k: int, width: int, residual: bool) -> nn.Sequential:
    """K basic blocks of ``width`` channels, He-initialised; plain ones are the same without shortcut."""
    net = nn.Sequential(*[BasicBlock(width, width, residual=residual, shortcut="A") for _ in range(k)])
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return net


class MapSource:
    """Non-negative maps to reproduce (a block's input is a ReLU output): noise or image features.

    ``images`` (train, test uint8 tensors) selects features of real images: a fixed random 3x3 conv
    and ReLU on the standardised images, average-pooled to ``size``. Each source replays the same
    batches for the same seed, so plain and residual stacks see identical data.
    """

    def __init__(
        self, width: int, size: int, seed: int, images: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> None:
        self.width, self.size = width, size
        self.gen = torch.Generator().manual_seed(seed)
        self.train: torch.Tensor | None = None
        if images is None:
            self.held = F.relu(torch.randn(HELD_OUT, width, size, size, generator=self.gen))
            return
        conv = nn.Conv2d(images[0].shape[1], width, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, generator=self.gen, nonlinearity="relu")
        with torch.no_grad():
            self.train = self._features(conv, images[0])
            self.held = self._features(conv, images[1][:HELD_OUT])

    def _features(self, conv: nn.Conv2d, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
        return F.adaptive_avg_pool2d(F.relu(conv(x)), self.size)

    def batch(self) -> torch.Tensor:
        if self.train is not None:
            return self.train[torch.randint(len(self.train), (BATCH,), generator=self.gen)]
        return F.relu(torch.randn(BATCH, self.width, self.size, self.size, generator=self.gen))


def _dataset_images(opts: Options) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to 4096 training and the first test images of ``--dataset`` for ``--inputs images``."""
    data = load_dataset(opts.dataset, opts.data_dir)
    if data.train is None or data.test is None:
        raise UserError(f"--inputs images needs a dataset with train and test splits, not {opts.dataset}")
    return data.train.images[:4096], data.test.images


def learn_identity(net: nn.Module, source: MapSource, steps: int, device: torch.device) -> float:
    """Train ``net`` to output its input (MSE); returns the remaining error on held-out maps.

    The error is the mean squared error divided by the variance of the maps: 0 is a perfect identity,
    1 is no better than outputting the mean. SGD with momentum, a linear warm-up then cosine decay,
    and gradient clipping (a deep residual stack starts far from the identity, see the notes).
    """
    net.to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    warm = max(1, round(WARMUP * steps))
    for i in range(steps):
        scale = (
            (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))
        )
        for group in opt.param_groups:
            group["lr"] = LR * scale
        x = source.batch().to(device)
        loss = F.mse_loss(net(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
    net.eval()
    with torch.no_grad():
        held = source.held.to(device)
        return (F.mse_loss(net(held), held) / held.var()).item()


def run(
    opts: Options,
    ks: tuple[int, ...] = (1, 2, 4, 8),
    width: int = 8,
    size: int = 8,
    steps: int = 300,
    inputs: str = "random",
    depths: tuple[int, int] | None = (20, 56),
    train_images: int = 2000,
) -> dict[str, Any]:
    """Part 1 for every K and seed; part 2 (unless ``depths`` is None) on trained nets of ``depths``."""
    started = time.perf_counter()
    device = select_device(opts.device)
    images = _dataset_images(opts) if inputs == "images" else None
    learned = []
    for seed in range(opts.seeds):
        for k in ks:
            for residual in (False, True):
                torch.manual_seed(seed)
                source = MapSource(width, size, seed + 1, images)
                error = learn_identity(stack(k, width, residual), source, steps, device)
                learned.append({"k": k, "residual": residual, "seed": seed, "error": error})
                if not opts.quiet:
                    print(
                        f"identity: K={k} {'residual' if residual else 'plain'} seed {seed}: {error:.4g}",
                        flush=True,
                    )
    iterations = construction = runs = None
    if depths is not None:
        nets = degradation.nets_for(depths)
        iterations = shared_budget.resolve_iterations(opts, nets, default=400, started=started)
        runs = training.train_all(opts, nets, iterations)
        construction = measure_construction(opts, runs, depths, train_images)
    record = records.base_record(NAME, opts, iterations, started, runs)
    record["learn"] = {
        "ks": list(ks),
        "width": width,
        "size": size,
        "steps": steps,
        "inputs": inputs,
        "rows": learned,
    }
    record["construction"] = construction
    records.write_record(opts.out, record)
    return record


def deepen(model: ResNet, depth: int) -> ResNet:
    """A ``depth``-layer net computing what ``model`` computes: its layers copied, identity blocks added.

    The extra blocks go at the end of each stage (where shapes do not change). A residual block with
    the last BN's gamma and beta at zero adds nothing to its shortcut: an exact identity in any mode.
    A plain block becomes the identity in eval mode with Dirac (identity) kernels and BNs whose
    running statistics and scale cancel out; its ReLUs pass the non-negative input unchanged.
    """
    config = model.config
    deep = ResNet(**{**config, "layers": [(check_depth(depth) - 2) // 6] * len(config["layers"])})
    deep.load_state_dict(model.state_dict(), strict=False)  # the added blocks keep their own weights
    with torch.no_grad():
        for name, old in zip(model.stage_names, config["layers"], strict=True):
            for block in list(getattr(deep, name))[old:]:
                if block.residual:
                    nn.init.zeros_(block.bn2.weight)
                    nn.init.zeros_(block.bn2.bias)
                    continue
                for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
                    nn.init.dirac_(conv.weight)
                    bn.running_mean.zero_()
                    bn.running_var.fill_(1.0)
                    bn.weight.fill_(math.sqrt(1.0 + bn.eps))
                    bn.bias.zero_()
    return deep.eval()


def _train_error(model: ResNet, batches: Any, device: torch.device) -> tuple[float, torch.Tensor]:
    """Top-1 error (eval mode) on unaugmented training images, and the logits."""
    model.to(device).eval()
    logits, labels = [], []
    with torch.no_grad():
        for x, y in batches:
            logits.append(model(x).double().cpu())
            labels.append(y.cpu())
    out, y = torch.cat(logits), torch.cat(labels)
    return (out.argmax(1) != y).double().mean().item(), out


def measure_construction(
    opts: Options, runs: dict[tuple[CifarNet, int], Path], depths: tuple[int, int], train_images: int
) -> dict[str, Any]:
    """Training error of the shallow nets, their identity-deepened copies and the deep nets from scratch."""
    shallow_depth, deep_depth = depths
    device = select_device(opts.device)
    rows, scored = [], 0
    for (net, seed), path in runs.items():
        if net.depth != shallow_depth:
            continue
        shallow, ckpt = finished_runs.load_trained(path)
        batches = finished_runs.split_batches(opts, ckpt, "train", train_images)
        scored = len(batches.images)
        scratch, _ = finished_runs.load_trained(runs[CifarNet(deep_depth, net.residual), seed])
        e_shallow, logits = _train_error(shallow, batches, device)
        e_built, built_logits = _train_error(deepen(shallow, deep_depth), batches, device)
        e_scratch, _ = _train_error(scratch, batches, device)
        rows.append(
            {
                "residual": net.residual,
                "seed": seed,
                "shallow": e_shallow,
                "built": e_built,
                "scratch": e_scratch,
                "max_logit_diff": (logits - built_logits).abs().max().item(),
            }
        )
    return {"depths": list(depths), "train_images": scored, "rows": rows}


def construction_verdicts(construction: dict[str, Any], iterations: int) -> tuple[Table, list[Verdict]]:
    """The construction table and its verdicts: built == shallow exactly; scratch vs built."""
    lo, hi = construction["depths"]
    table = Table(
        f"Part 2: training error (eval mode, first {construction['train_images']:,} training images)",
        ["net", "how it was obtained", "training error"],
        [],
        "Max logit difference: largest |logit| change between the shallow net and its deepened copy.",
    )
    verdicts = []
    for residual in (False, True):
        rows = [r for r in construction["rows"] if r["residual"] == residual]
        small, big = CifarNet(lo, residual), CifarNet(hi, residual)
        shallow, built, scratch = (Stat.of([r[k] for r in rows]) for k in ("shallow", "built", "scratch"))
        diff = max(r["max_logit_diff"] for r in rows)
        extra = f"{(hi - lo) // 2} zero-gamma residual blocks" if residual else f"{hi - lo} identity layers"
        table.rows += [
            [small.label, "trained", str(shallow)],
            [
                f"{big.label} (built)",
                f"{small.label} + {extra} (max logit difference {diff:.2g})",
                str(built),
            ],
            [big.label, "trained from scratch", str(scratch)],
        ]
        same = abs(built.mean - shallow.mean) < 1e-12 and diff < 1e-3
        verdicts.append(
            Verdict(
                f"{big.label} built from {small.label} + {extra}: training error {built} "
                f"{'=' if same else '!='} {small.label}'s {shallow} (max logit difference {diff:.2g}): "
                f"a deeper net at least as good as the shallower one {'exists' if same else 'was not built'}",
                same,
            )
        )
        worse = clearly_above(scratch, built)
        if not residual:
            verdicts.append(
                Verdict(
                    f"{big.label} trained from scratch: {scratch} vs {built} for the built one: SGD "
                    f"{'did not find' if worse else 'found'} a solution as good (degradation "
                    f"{'reproduced' if worse else 'not reproduced'})",
                    worse,
                )
            )
        else:
            short = iterations < PAPER_ITERATIONS / 10
            verdicts.append(
                Verdict(
                    f"{big.label} trained from scratch: {scratch} vs {built} for the built one: "
                    + ("no worse: no degradation with shortcuts" if not worse else "worse so far"),
                    True if not worse else (None if short else False),
                )
            )
    return table, verdicts


def learn_stats(record: dict[str, Any]) -> dict[tuple[int, bool], Stat]:
    """Remaining error per (K, residual) over seeds."""
    found: dict[tuple[int, bool], list[float]] = {}
    for row in record["learn"]["rows"]:
        found.setdefault((row["k"], row["residual"]), []).append(row["error"])
    return {key: Stat.of(v) for key, v in found.items()}


def learn_verdicts(stats: dict[tuple[int, bool], Stat], ks: list[int]) -> list[Verdict]:
    """Residual below plain at every K; plain error growing from the smallest to the largest K."""
    pairs = ", ".join(f"K={k}: {stats[k, False].mean:.3g} vs {stats[k, True].mean:.3g}" for k in ks)
    better = all(clearly_above(stats[k, False], stats[k, True]) for k in ks)
    claim = "residual blocks learn the identity better than plain blocks"
    out = [
        Verdict(
            f"remaining error plain vs residual, {pairs}: {claim}: {'' if better else 'not '}reproduced",
            better,
        )
    ]
    if len(ks) > 1:
        first, last = stats[ks[0], False], stats[ks[-1], False]
        grows = clearly_above(last, first)
        out.append(
            Verdict(
                f"plain blocks: K={ks[0]} {first.mean:.3g} -> K={ks[-1]} {last.mean:.3g}: stacking more "
                f"nonlinear layers makes the identity {'harder' if grows else 'not clearly harder'} to learn",
                grows,
            )
        )
    return out


def section(out: Path, record: dict[str, Any]) -> Section:
    """Both parts: error vs K (figure, table, verdicts) and the construction (table, verdicts)."""
    learn = record["learn"]
    ks = learn["ks"]
    stats = learn_stats(record)
    unit = "remaining error (MSE / variance of the maps, log scale)"
    fig = figures.identity_error(
        ks,
        {
            "plain blocks": [stats[k, False].mean for k in ks],
            "residual blocks": [stats[k, True].mean for k in ks],
        },
        out / "figures" / "identity-vs-k.png",
        f"Learning the identity by SGD: {learn['width']} channels, {learn['size']}x{learn['size']} "
        f"{learn['inputs']} maps, {learn['steps']} steps",
        unit,
    )
    rows = [[str(k), _fmt(stats[k, False]), _fmt(stats[k, True])] for k in ks]
    sec = Section(
        title="Identity mappings and the construction argument (Sec. 1, Sec. 3.1)",
        claim=CLAIM,
        meta=records.section_meta(record),
        tables=[
            Table(
                "Part 1: remaining error after learning the identity", ["K blocks", "plain", "residual"], rows
            )
        ],
        verdicts=learn_verdicts(stats, ks),
        figures=[
            Figure(fig, "Error left after training K stacked blocks to reproduce their input; plain dashed.")
        ],
        notes=[
            "Part 1: each block is two conv-BN-ReLU layers (plain) or the same with the identity shortcut "
            "added before the second ReLU (residual), so both stacks have 2K conv layers.",
            "A residual stack at He initialisation adds a unit-variance residual per block, so its output "
            "starts far from the input for large K; gradient clipping and a warm-up keep SGD stable.",
        ],
    )
    if record.get("construction"):
        iterations = record["budget"]["iterations"]
        sec.budget_note = budget_note(iterations)
        table, verdicts = construction_verdicts(record["construction"], iterations)
        sec.tables.append(table)
        sec.verdicts += verdicts
    return sec


def _fmt(stat: Stat) -> str:
    return f"{stat.mean:.3g}" if stat.n == 1 else f"{stat.mean:.3g} ± {stat.std:.2g}"
