"""benchmarks/register_weights.py on tiny finished runs (12 iterations of synthetic data, the paper's
schedule shape scaled to them): what it refuses, what it writes into a package directory the test
owns, and that the registered weights load through the registry with their SHA-256 checked."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from resnetlab.cli import build_parser
from resnetlab.cli.train import build_config
from resnetlab.download import file_digest
from resnetlab.engine import train
from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.rundir import read_summary
from resnetlab.recipes import get_recipe
from resnetlab.weights import WEIGHTS, get_weights, load_weights, registry
from tiny import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import register_weights

ITERATIONS = 12


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the registered resnet20 with cifar-paper scaled to 12 iterations."""
    run = tmp_path_factory.mktemp("register") / "r20"
    train(tiny_config(run, model_overrides={}, recipe=get_recipe("cifar-paper"), iterations=ITERATIONS))
    return run


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty package directory in place of resnetlab/pretrained/, and a 12-iteration 'full schedule'."""
    monkeypatch.setattr(registry, "PACKAGE_DIR", tmp_path / "pretrained")
    monkeypatch.setattr(register_weights, "PAPER_ITERATIONS", ITERATIONS)
    return tmp_path / "pretrained"


def _register(*argv: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = register_weights.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_finished_run_is_registered_and_loads_through_the_registry(
    finished: Path, package: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = _register(str(finished), "--tag", "cifar10", "--machine", "a test box", capsys=capsys)
    assert code == 0, err
    assert "registered pretrained:resnet20:cifar10" in out
    names = ["resnet20-cifar10.safetensors", "resnet20-cifar10.json", "resnet20-cifar10.md"]
    assert sorted(p.name for p in package.iterdir()) == sorted([*names, "resnet20-cifar10.card.json"])
    weights = package / names[0]
    (card,) = registry.registered_cards(package)
    assert registry.read_card(package / "resnet20-cifar10.card.json") == card
    summary, config = read_summary(finished), load_checkpoint(finished / "checkpoint.pt")["config"]
    assert card.sha256 == file_digest(weights) and card.file == weights.name and card.url is None
    assert card.publisher == "resnetlab" and card.paper_recipe and card.iterations == ITERATIONS
    assert card.trained_on == card.dataset_spec == config["dataset"] and card.normalization == "per-pixel"
    (result,) = card.results
    assert result.top1 == round(100 * (1 - summary["final"]["test_top1_error"]), 2)
    assert result.top5 == round(100 * (1 - summary["final"]["test_top5_error"]), 2)
    assert result.data == config["dataset"] and "final evaluation" in result.by

    # The registry reads the card file: the weights load with their SHA-256 and config checked.
    # the shipped resnet20:cifar10 makes way for the test's own
    monkeypatch.setattr(registry, "WEIGHTS", (*(c for c in WEIGHTS if c.ref != card.ref), card))
    assert get_weights("resnet20", "cifar10") == card
    ckpt = load_weights("pretrained:resnet20:cifar10")
    trained = load_checkpoint(finished / "checkpoint.pt")["model"]
    assert ckpt["origin"] == "pretrained:resnet20:cifar10"
    assert all(torch.equal(ckpt["model"][k], v) for k, v in trained.items())

    # The model card says what the issue asks for; its retrain command asks for the same run.
    text = (package / names[2]).read_text()
    for fragment in (card.sha256, "a test box", "seed | 0", f"{ITERATIONS:,} (the paper's full schedule)"):
        assert fragment in text
    assert f"{result.top1:.2f}% / {result.top5:.2f}%" in text and "wall time" in text and "precision" in text
    command = text.split("| retrain | `")[1].split("`")[0]
    assert command in card.recipe
    again = build_config(build_parser().parse_args(shlex.split(command)[1:]))
    for field in ("model", "dataset", "seed", "precision", "memory_format", "iterations", "deterministic"):
        assert getattr(again, field) == config[field], field
    assert again.compile is config["compile"] is False  # a 12-iteration run is eager under auto
    assert again.model_overrides == {} and again.recipe.to_dict() == config["recipe"]


def test_registering_again_needs_replace(
    finished: Path, package: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _register(str(finished), "--tag", "cifar10", capsys=capsys)[0] == 0
    before = (package / "resnet20-cifar10.card.json").read_text()
    code, _, err = _register(str(finished), "--tag", "cifar10", capsys=capsys)
    assert code == 2 and "give --replace" in err and len(err.strip().splitlines()) == 1
    code, _, err = _register(
        str(finished), "--tag", "cifar10", "--machine", "another", "--replace", capsys=capsys
    )
    assert code == 0, err
    after = json.loads((package / "resnet20-cifar10.card.json").read_text())
    assert after["source"] != json.loads(before)["source"] and "another" in after["source"]
    # safetensors writes its metadata keys in any order: the SHA-256 is of the file written this time
    assert after["sha256"] == file_digest(package / "resnet20-cifar10.safetensors")


def test_what_is_refused_leaves_the_package_untouched(
    finished: Path,
    package: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished, unfinished)
    (unfinished / "summary.json").unlink()
    tiny_net = tmp_path / "tiny-net"
    train(tiny_config(tiny_net, recipe=get_recipe("cifar-paper"), iterations=ITERATIONS))
    cases = [
        ((str(unfinished), "--tag", "cifar10"), f"is unfinished (iteration {ITERATIONS} of {ITERATIONS}"),
        ((str(tiny_net), "--tag", "cifar10"), "only the registered architecture"),
        ((str(tmp_path / "missing"), "--tag", "cifar10"), "is not a directory"),
        ((str(finished), "--tag", "bad tag"), "--tag must be letters, digits and dashes"),
    ]
    for argv, fragment in cases:
        code, _, err = _register(*argv, capsys=capsys)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setattr(register_weights, "PAPER_ITERATIONS", 64_000)
    code, _, err = _register(str(finished), "--tag", "cifar10", capsys=capsys)
    assert code == 2 and "not the paper's full schedule" in err and "iterations" in err
    assert not package.exists()


def test_the_card_names_no_path_of_the_training_machine() -> None:
    config = tiny_config(Path("/runs/x"), model_overrides={}, recipe=get_recipe("cifar-paper"))
    config.data_dir = "/mnt/data/cifar10"
    command = register_weights.retrain_command(config, "r20")
    assert "--data-dir DIR" in command and "/mnt/data" not in command
    run = SimpleNamespace(
        path=Path("/srv/runs/r20-official"),
        summary={"command": "resnetlab train --resume /srv/runs/r20-official"},
    )
    assert register_weights._last_command(run) == "resnetlab train --resume r20-official"
    assert register_weights._last_command(SimpleNamespace(path=run.path, summary={})) == "not recorded"


@pytest.mark.parametrize("recorded", [True, False, None])
def test_the_retrain_command_asks_for_the_step_the_run_had(recorded: bool | None) -> None:
    """Today's default compiles a CPU run of the paper's length, and a compiled step rounds otherwise
    than the eager one: the command names the run's own choice (None: recorded before compiling
    existed, when every run was eager)."""
    config = tiny_config(Path("/runs/x"), model_overrides={}, recipe=get_recipe("cifar-paper"))
    config.compile = recorded
    command = register_weights.retrain_command(config, "r20")
    again = build_config(build_parser().parse_args(shlex.split(command)[1:]))
    assert again.compile is bool(recorded)


def test_every_shipped_retrain_command_names_its_step() -> None:
    """The cards in the package (card and Markdown) retrain with an explicit --compile or --no-compile."""
    cards = [c for c in registry.registered_cards(registry.PACKAGE_DIR) if "retrain: " in c.recipe]
    assert cards, "no registered card with a retrain command"
    for card in cards:
        command = card.recipe.split("retrain: ")[1]
        markdown = (registry.PACKAGE_DIR / Path(card.file).with_suffix(".md").name).read_text()
        assert f"| retrain | `{command}` |" in markdown, card.ref
        again = build_config(build_parser().parse_args(shlex.split(command)[1:]))
        assert again.compile is not None, card.ref
