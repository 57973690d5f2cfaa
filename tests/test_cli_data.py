"""`resnetlab data info`: table and JSON output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnetlab.cli import main


def _folder(root: Path, splits: tuple[str, ...] = ("train", "test"), size: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for cls in ("bee", "ant"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3 if split == "train" else 2):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def _info(*args: str) -> list[str]:
    return ["data", "info", *args]


def test_table_lists_splits_classes_size_and_cache(tmp_path, capsys):
    root = _folder(tmp_path / "bugs")
    assert main(_info("--dataset", f"folder:{root}", "--data-dir", str(tmp_path / "cache"))) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"dataset  folder:{root}"
    assert out[1:4] == ["train    6 images", "test     4 images", "classes  2: ant, bee"]
    assert out[4].startswith("image    3x6x6")
    assert out[5].startswith(f"cache    {tmp_path / 'cache' / 'folders'}/bugs-")


def test_json_has_counts_classes_size_and_cache(tmp_path, capsys):
    root = _folder(tmp_path / "bugs", splits=("train", "val"), size=5)
    argv = _info("--dataset", f"folder:{root}", "--data-dir", str(tmp_path / "cache"), "--json")
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"] == 6 and out["val"] == 4 and out["test"] is None
    assert out["classes"] == ["ant", "bee"] and out["image_size"] == [5, 5] and out["streamed"] is False
    assert Path(out["cache"]).is_file() and Path(out["cache"]).is_relative_to(tmp_path / "cache")


def test_synthetic_spec(capsys):
    assert main(_info("--dataset", "synthetic:40,20,8,4", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["train"], out["test"], out["image_size"], len(out["classes"])) == (40, 20, [8, 8], 4)
    assert "val" not in out and out["cache"] is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mnist", "unknown dataset 'mnist'"),
        ("folder:", "unknown dataset 'folder:'"),
        ("synthetic:1,x", "bad synthetic spec"),
        ("folder:/no/such/dir", "dataset folder /no/such/dir does not exist"),
        ("imagenet:/no/such/dir", "dataset folder /no/such/dir does not exist"),
    ],
)
def test_bad_specs_are_one_line_exit_2(spec, expected, capsys):
    assert main(_info("--dataset", spec)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"resnetlab: error: {expected}") and err.count("\n") == 1


def test_corrupt_file_fails_then_skip_warns(tmp_path, capsys):
    root = _folder(tmp_path / "bugs")
    bad = root / "train" / "ant" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cache = str(tmp_path / "cache")
    assert main(_info("--dataset", f"folder:{root}", "--data-dir", cache)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"resnetlab: error: cannot decode image {bad}") and err.count("\n") == 1
    assert main(_info("--dataset", f"folder:{root}", "--data-dir", cache, "--skip-bad-images", "--json")) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["train"] == 6
    assert captured.err == f"resnetlab: warning: skipped 1 unreadable image(s): {bad}\n"


def test_installed_script_exits_2_without_traceback(tmp_path):
    script = Path(sys.executable).parent / "resnetlab"
    if not script.exists():
        pytest.skip(f"no installed console script at {script}")
    result = subprocess.run(
        [str(script), "data", "info", "--dataset", f"folder:{tmp_path / 'missing'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"resnetlab: error: dataset folder {tmp_path / 'missing'} does not exist: "
        "check the PATH in folder:PATH / imagenet:PATH\n"
    )
    assert "Traceback" not in result.stdout + result.stderr
