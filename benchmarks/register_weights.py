"""Register a finished training run as in-package pretrained weights, in one command.

    python benchmarks/register_weights.py /work/runs/r20-official --tag cifar10 --machine "..."

It checks that the run finished the paper's full CIFAR schedule (the cifar-paper recipe, all 64,000
iterations) on the registered architecture, then writes into ``src/resnetlab/pretrained/``:

- ``NAME-TAG.safetensors`` and ``NAME-TAG.json``: the weights and their config, as `resnetlab export`
  writes them;
- ``NAME-TAG.md``: the model card for people (data, recipe, iterations, precision, wall time,
  machine, seed, test accuracy, SHA-256, and the command that retrains it);
- ``NAME-TAG.card.json``: the registry's card (read by ``resnetlab.weights.registry``), written
  last, so the weights are registered only once every other file is in place.

Nothing else needs editing: the weights are then ``pretrained:NAME:TAG``, and the default weights
of NAME where the registry's rule says so (ours trained with the paper's recipe on the official
data come first). It evaluates nothing: the top-1/top-5 on the test split are the run's final
evaluation (fp32, the whole test set) from its summary.json, which `resnetlab eval
pretrained:NAME:TAG` reproduces. Every file is written atomically; an existing one is replaced only
with ``--replace``. Errors are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

from resnetlab.atomic import atomic_write
from resnetlab.download import file_digest
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnetlab.engine.config import TrainConfig
from resnetlab.errors import UserError
from resnetlab.experiments.cifar_table import PAPER_RECIPE
from resnetlab.experiments.finished_runs import FinishedRun, read_finished
from resnetlab.recipes import Recipe, recipe_for
from resnetlab.reporting.report import PAPER_ITERATIONS
from resnetlab.weights import registry
from resnetlab.weights.card import OURS, TEST_SETS, Accuracy, WeightsCard
from resnetlab.weights.export import export_safetensors

# The training images of a data set, where known (the card says how many the weights saw).
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000}
DATA_NAMES = {"cifar10": "CIFAR-10, the official files (`--dataset cifar10`)"}
BY = "the run's final evaluation, fp32, whole test set"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: the run, the tag, and how to describe the machine it trained on."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a finished run directory of `resnetlab train` (its --out)")
    p.add_argument("--tag", required=True, help="the weights' tag, e.g. cifar10 (pretrained:NAME:TAG)")
    p.add_argument(
        "--machine",
        help="the machine it trained on, in words, e.g. '2-core AMD EPYC, 24 GB, 1 thread' (default: the "
        "device and host name its summary.json records)",
    )
    p.add_argument("--replace", action="store_true", help="replace weights already registered as NAME-TAG")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Register the run; a UserError is one line on stderr and exit code 2."""
    args = parse_args(argv)
    try:
        card, files = register(args.run, args.tag, machine=args.machine, replace=args.replace)
    except UserError as exc:
        print(f"register_weights: error: {exc}", file=sys.stderr)
        return 2
    others = [c for c in registry.WEIGHTS if c.model == card.model and c.tag != card.tag]
    default = min([*others, card], key=registry.default_rank) == card
    print(f"registered {card.ref}" + (f", now the default weights of {card.model}" if default else ""))
    for path in files:
        print(f"  wrote {path}")
    return 0


def register(
    run: Path, tag: str, *, machine: str | None = None, replace: bool = False
) -> tuple[WeightsCard, list[Path]]:
    """Check ``run``, write its weights, model card and registry card into the package; returns the
    card and the files written (the registry card last)."""
    if not tag.replace("-", "").isalnum():
        raise UserError(f"--tag must be letters, digits and dashes, like cifar10, got {tag!r}")
    finished = check_run(run)
    stem = f"{finished.config.model}-{tag}"
    package = registry.PACKAGE_DIR
    paths = [package / f"{stem}{suffix}" for suffix in (".safetensors", ".json", ".md", registry.CARD_SUFFIX)]
    clash = [p.name for p in paths if p.exists()]
    if clash and not replace:
        raise UserError(f"{package} already holds {', '.join(clash)}: give --replace to replace them")
    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    if ckpt.get("iteration") != finished.iterations:
        raise UserError(
            f"{run / CHECKPOINT_NAME} is at iteration {ckpt.get('iteration')}, not the run's last "
            f"({finished.iterations:,}): it is not the finished run's checkpoint"
        )
    weights, config_json = export_safetensors(ckpt, paths[0])
    card = make_card(finished, ckpt, tag, file_digest(weights), machine)
    atomic_write(paths[2], model_card(card, finished, machine))
    atomic_write(paths[3], registry.card_json(card))
    return card, [weights, config_json, paths[2], paths[3]]


def check_run(run: Path) -> FinishedRun:
    """``run`` if it finished the paper's full schedule on a registered architecture, else a UserError."""
    finished = read_finished(run)
    config = finished.config
    if config.model_overrides:
        raise UserError(
            f"{run} trained {config.model} with {config.model_overrides}: only the registered "
            f"architecture can be registered as {config.model} weights"
        )
    trained = config.schedule_recipe()
    paper = recipe_for(PAPER_RECIPE, config.model).scaled(PAPER_ITERATIONS)
    differ = [
        f.name for f in dataclasses.fields(Recipe) if getattr(trained, f.name) != getattr(paper, f.name)
    ]
    if differ or finished.iterations != PAPER_ITERATIONS:
        raise UserError(
            f"{run} is not the paper's full schedule ({PAPER_RECIPE} at {PAPER_ITERATIONS:,} iterations; it "
            f"differs in {', '.join(differ or ['iterations'])}): only such runs are registered"
        )
    if _test_errors(finished) is None:
        raise UserError(
            f"{run}/summary.json has no final result on the test split: nothing to put on the card"
        )
    return finished


def _test_errors(run: FinishedRun) -> tuple[float, float] | None:
    """(top-1, top-5) error of the run's final evaluation on the test split, or None."""
    final = run.summary["final"]
    if "test_top1_error" in final:
        return final["test_top1_error"], final["test_top5_error"]
    if final.get("split") == "test":
        return final["top1_error"], final["top5_error"]
    return None


def make_card(
    run: FinishedRun, ckpt: dict[str, Any], tag: str, sha256: str, machine: str | None
) -> WeightsCard:
    """The registry's card of the run's weights (file ``NAME-TAG.safetensors`` in the package)."""
    config = run.config
    top1, top5 = _test_errors(run)  # checked by check_run
    norm = ckpt["normalizer"]
    per_channel = norm["mode"] == "per-channel"
    test_set = TEST_SETS.get(config.dataset, f"{config.dataset}, test split")
    return WeightsCard(
        model=config.model,
        tag=tag,
        publisher=OURS,
        license="MIT",
        source=f"this project: {_trained_with(run)}, run {run.path.name}, on {_machine(run, machine)}",
        dataset=_data_words(config),
        dataset_spec=config.dataset,
        trained_on=config.dataset,
        classes=tuple(ckpt["classes"]),
        image_size=tuple(ckpt["image_size"]),
        normalization=norm["mode"],
        mean=tuple(norm["mean"].flatten().tolist()) if per_channel else None,
        std=tuple(norm["std"].flatten().tolist()) if per_channel else None,
        recipe=f"{_recipe_words(config)}; retrain: {retrain_command(config, run.path.name)}",
        paper_recipe=True,
        iterations=run.iterations,
        results=(
            Accuracy(test_set, round(100 * (1 - top1), 2), round(100 * (1 - top5), 2), BY, config.dataset),
        ),
        file=f"{config.model}-{tag}.safetensors",
        sha256=sha256,
    )


def _trained_with(run: FinishedRun) -> str:
    """What trained the run: `resnetlab train`, or what the GPU fleet script's summary says."""
    return run.summary.get("trained_with") or "resnetlab train"


def _machine(run: FinishedRun, machine: str | None) -> str:
    """``--machine``, else the device and host name the run's summary records."""
    if machine:
        return machine
    host = run.summary.get("hostname")
    return run.summary.get("device", "an unrecorded device") + (f" (host {host})" if host else "")


def _data_words(config: TrainConfig) -> str:
    """What the weights were trained on, in words."""
    name = DATA_NAMES.get(config.dataset, config.dataset)
    total = TRAIN_IMAGES.get(config.dataset)
    held = f" ({config.val_split:,} training images held out for validation)" if config.val_split else ""
    if total is None:
        return name + held
    if config.val_split:
        return f"{name}: {total - config.val_split:,} training images{held}"
    return (
        f"{name}: all {total:,} training images (the common reading of the paper, which chose its "
        "schedule on a 45k/5k split)"
    )


def _recipe_words(config: TrainConfig) -> str:
    """The recipe and mode, e.g. 'cifar-paper: SGD momentum 0.9, ...; bf16 autocast, channels_last'."""
    r = config.schedule_recipe()
    drops = " and ".join(f"{m:,}" for m in r.milestones)
    warmup = (
        f", lr {r.warmup_lr:g} until the training error is below {r.warmup_error:.0%}" if r.warmup_lr else ""
    )
    return (
        f"{r.name}: SGD momentum {r.momentum:g}, weight decay {r.weight_decay:g}, batch {r.batch_size}, lr "
        f"{r.lr:g} divided by {1 / r.gamma:g} at {drops} iterations{warmup}, {r.iterations:,} iterations; "
        f"{_mode(config)}, {config.normalization} mean; seed {config.seed}"
    )


def _mode(config: TrainConfig) -> str:
    """How the run computed: 'bf16 autocast, channels_last' or 'fp32, contiguous'."""
    precision = "bf16 autocast" if config.precision == "bf16" else config.precision
    return f"{precision}, {config.memory_format}"


def retrain_command(config: TrainConfig, out: str) -> str:
    """The `resnetlab train` command that trains the same run again (same seed, hence the same
    initialisation and batches, and the same compiled or eager step) into ``runs/OUT``. Where the
    run was told where its data is, the command says ``--data-dir DIR``: that folder is the
    trainer's machine's, not the reader's."""
    args = ["resnetlab", "train", "--model", config.model, "--dataset", config.dataset]
    args += ["--data-dir", "DIR"] if config.data_dir else []
    args += ["--recipe", config.recipe.name, "--iterations", str(config.total_iterations())]
    args += [
        "--seed",
        str(config.seed),
        "--precision",
        config.precision,
        "--memory-format",
        config.memory_format,
    ]
    default = TrainConfig(model=None, dataset=None)
    for name in ("val_split", "normalization"):
        if getattr(config, name) != getattr(default, name):
            args += [f"--{name.replace('_', '-')}", str(getattr(config, name))]
    args += ["--deterministic"] if config.deterministic else []
    # Explicit either way: the default compiles a CPU run this long, and a compiled step rounds
    # differently from the eager one (runs from before compiling existed trained eager).
    args += ["--compile" if config.compile else "--no-compile"]
    return shlex.join([*args, "--out", f"runs/{out}"])


def _last_command(run: FinishedRun) -> str:
    """The run's last recorded command, its run directory shown by name only (the path was the
    trainer's machine's)."""
    command = run.summary.get("command")
    if command is None:
        return "not recorded"
    return command.replace(str(run.path), run.path.name)


def _code(summary: dict[str, Any]) -> str:
    """The versions a run trained with, as far as its summary records them."""
    torch_version = summary.get("torch_version", summary.get("torch"))
    return (
        f"resnetlab {summary.get('resnetlab_version')}, git {summary.get('git_hash')}, torch {torch_version}"
    )


def model_card(card: WeightsCard, run: FinishedRun, machine: str | None) -> str:
    """The model card in Markdown: what a person needs to trust, use and retrain the weights."""
    result = card.results[0]
    paper = registry.paper_top1(card.model)
    paper_text = "-" if paper is None else f"{paper:.2f}% top-1 ({100 - paper:.2f}% test error, Table 6)"
    wall = run.summary["wall_time_s"]
    rows = [
        ("reference", f"`{card.ref}`; `resnetlab.create_model({card.model!r}, pretrained={card.tag!r})`"),
        ("data", card.dataset),
        ("recipe", _recipe_words(run.config)),
        (
            "iterations",
            f"{card.iterations:,} (the paper's full schedule), {run.summary.get('epochs', 0):.1f} epochs",
        ),
        ("precision", _mode(run.config)),
        ("wall time", f"{wall:,.0f} s ({wall / 3600:.1f} h), resumes included"),
        ("machine", _machine(run, machine)),
        ("seed", str(run.config.seed)),
        (f"top-1 / top-5 on the {result.test_set}", f"{result.top1:.2f}% / {result.top5:.2f}% ({result.by})"),
        ("the paper", paper_text),
        ("file", f"`{card.file}` (+ `{Path(card.file).with_suffix('.json').name}`), SHA-256 `{card.sha256}`"),
        ("retrain", f"`{retrain_command(run.config, run.path.name)}`"),
        (
            "trained by",
            f"{_trained_with(run)}; its last command: `{_last_command(run)}`",
        ),
        ("code", _code(run.summary)),
        ("publisher, licence", f"{card.publisher}, {card.license}"),
    ]
    lines = [f"# {card.model}, tag {card.tag}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
