"""Using resnetlab without training: what `import resnetlab`, ``create_model(pretrained=True)``,
`resnetlab eval` and `resnetlab predict` import, and that they work where ``import fcntl`` fails (as
on Windows).

None of them needs the trainer or the run lock, and the run lock is the one module of resnetlab that
imports ``fcntl``. (``fcntl`` is in ``sys.modules`` all the same: torch imports the standard library's
subprocess, which imports it where it exists and does without it elsewhere.) Each check runs in a
fresh interpreter: this one has imported everything already.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fault_cases import NO_FCNTL, write_png
from resnetlab.cli import COMMANDS, build_parser
from tiny_nets import checkpoint, save_run

SRC = Path(__file__).resolve().parents[1] / "src"
# What inference must never import: the training loop, a net's run and the run lock.
TRAINING = {"resnetlab.engine.trainer", "resnetlab.engine.net_run", "resnetlab.engine.runlock"}

# Every resnetlab module `import resnetlab` may load: the architectures, the weights registry and
# loader, and the few engine modules that read checkpoints. A new one here should be a choice.
IMPORT_RESNETLAB = {
    "resnetlab",
    "resnetlab.atomic",
    "resnetlab.data",
    "resnetlab.data.augment",
    "resnetlab.data.cache",
    "resnetlab.data.loader",
    "resnetlab.download",
    "resnetlab.engine",
    "resnetlab.engine.checkpoint",
    "resnetlab.engine.state",
    "resnetlab.errors",
    "resnetlab.models",
    "resnetlab.models.blocks",
    "resnetlab.models.params",
    "resnetlab.models.resnet",
    "resnetlab.models.zoo",
    "resnetlab.weights",
    "resnetlab.weights.card",
    "resnetlab.weights.convert",
    "resnetlab.weights.export",
    "resnetlab.weights.hub",
    "resnetlab.weights.loading",
    "resnetlab.weights.registry",
}


def modules_after(code: str, preamble: str = "") -> set[str]:
    """The modules loaded once ``code`` has run in a fresh interpreter (which must succeed)."""
    report = "\nimport json, sys\nprint('MODULES', json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", preamble + code + report], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "resnetlab" or m.startswith("resnetlab.")}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny net's run directory (on synthetic data) and an image to predict, in one folder."""
    root = tmp_path_factory.mktemp("light")
    write_png(root / "image.png")
    return save_run(checkpoint(1, True), root / "run")


def fcntl_importers() -> set[str]:
    """The modules of resnetlab with an ``import fcntl`` anywhere in them."""
    found = set()
    for path in (SRC / "resnetlab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if "fcntl" in names or (isinstance(node, ast.ImportFrom) and node.module == "fcntl"):
                found.add(".".join(path.relative_to(SRC).with_suffix("").parts))
    return found


def test_only_the_run_lock_imports_fcntl() -> None:
    assert fcntl_importers() == {"resnetlab.engine.runlock"} <= TRAINING


def test_import_resnetlab_loads_no_training_code() -> None:
    loaded = modules_after("import resnetlab")
    assert not loaded & TRAINING
    assert ours(loaded) <= IMPORT_RESNETLAB, sorted(ours(loaded) - IMPORT_RESNETLAB)


def test_create_model_with_in_package_weights_loads_no_training_code() -> None:
    code = "import resnetlab\nm = resnetlab.create_model('resnet20', pretrained=True)\nassert not m.training"
    loaded = modules_after(code)
    assert not loaded & TRAINING
    assert ours(loaded) <= IMPORT_RESNETLAB, sorted(ours(loaded) - IMPORT_RESNETLAB)


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_load_no_training_code(command: str, run: Path) -> None:
    args = [str(run), str(run.parent / "image.png")] if command == "predict" else [str(run)]
    code = f"from resnetlab.cli import main\nassert main({[command, *args]!r}) == 0"
    loaded = modules_after(code)
    assert f"resnetlab.cli.{'evaluate' if command == 'eval' else command}" in loaded
    assert not loaded & TRAINING, sorted(loaded & TRAINING)
    assert "resnetlab.cli.train" not in loaded and "resnetlab.cli.reproduce" not in loaded


def test_without_fcntl_create_model_eval_and_predict_work(run: Path, tmp_path: Path) -> None:
    """``import fcntl`` fails (as on Windows); weights load and a tiny net is evaluated all the same."""
    code = f"""
try:
    import fcntl
except ImportError:
    pass
else:
    raise SystemExit("fcntl was importable")
import torch, resnetlab
from resnetlab.cli import main
model = resnetlab.create_model("resnet20", pretrained=True)
assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
assert main(["eval", {str(run)!r}, "--out", {str(tmp_path)!r}]) == 0
assert main(["predict", {str(run)!r}, {str(run.parent / "image.png")!r}, "--json"]) == 0
"""
    modules_after(code, NO_FCNTL)
    record = json.loads((tmp_path / "eval-test.json").read_text())
    assert record["images"] == 48 and len(record["per_class_accuracy"]) == 10


def test_each_command_parses_alone_as_in_the_full_parser() -> None:
    """`resnetlab COMMAND` registers only COMMAND's module: COMMANDS must name each command's module."""

    def commands(parser) -> set[str]:
        return set(parser._subparsers._group_actions[0].choices)

    assert commands(build_parser()) == set(COMMANDS)
    for name in COMMANDS:
        assert name in commands(build_parser(name)), name
