"""Our in-package weights trained on the official CIFAR-10 score what their cards say on the official
test set, through the same `resnetlab eval` a user runs.

The card's number is the final evaluation of the run that trained the weights; this evaluates the
shipped file, so it catches a file that is not the run's final weights, a wrong normalisation in the
exported config, or a card written from another run. It reads the official CIFAR-10 where
``RESNETLAB_DATA_DIR`` points (any folder `--data-dir` takes: the archive's, the extracted folder's
parent, or the extracted folder), else the read-only copy the other data tests use, and skips when
neither is there. It never downloads: the copy must be there already, and `eval` checks every file's
MD5 before it decodes any, so a copy that is not the official data fails the test rather than
passing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_runner import run_cli
from resnetlab.data.cache import ENV_DATA_DIR
from resnetlab.data.cifar import CIFAR, ENV_URL
from resnetlab.weights.card import CIFAR10, OURS
from resnetlab.weights.registry import WEIGHTS
from test_cifar_folder_md5 import real_folder

OFFICIAL_OURS = [c for c in WEIGHTS if c.publisher == OURS and c.trained_on == CIFAR10]

# A float32 forward pass sums in another order on another CPU (AVX2 or AVX-512 kernels, thread
# count), which can move an image that sits on a decision boundary: allow 2 of the 10,000 images.
IMAGES_THAT_MAY_FLIP = 2


def holds_official_cifar10(folder: Path) -> bool:
    """Whether ``folder`` is a data directory with CIFAR-10 in it, in one of the layouts `--data-dir`
    takes (what it holds is checked by `eval` itself, file by file)."""
    info = CIFAR["cifar10"]
    return (folder / info.archive).is_file() or any(
        (candidate / info.meta).is_file() for candidate in (folder / info.folder, folder)
    )


def official_data_dir() -> Path:
    """``RESNETLAB_DATA_DIR`` when it holds CIFAR-10, else the shared read-only copy; skips otherwise."""
    given = os.environ.get(ENV_DATA_DIR)
    if given:
        folder = Path(given).expanduser()
        if holds_official_cifar10(folder):
            return folder
        pytest.skip(
            f"{ENV_DATA_DIR}={given} holds no CIFAR-10 (cifar-10-python.tar.gz or cifar-10-batches-py)"
        )
    return real_folder()


def test_the_data_dir_is_found_in_every_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = CIFAR["cifar10"]
    (tmp_path / "extracted" / info.folder).mkdir(parents=True)
    (tmp_path / "extracted" / info.folder / info.meta).write_bytes(b"")
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / info.archive).write_bytes(b"")
    for folder in (tmp_path / "extracted", tmp_path / "extracted" / info.folder, tmp_path / "archive"):
        monkeypatch.setenv(ENV_DATA_DIR, str(folder))
        assert official_data_dir() == folder
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="holds no CIFAR-10"):
        official_data_dir()


@pytest.mark.parametrize("card", OFFICIAL_OURS, ids=lambda c: c.ref)
def test_shipped_official_weights_score_their_card_on_the_official_test_set(
    card, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = official_data_dir()
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))  # a read-only copy's decoded cache
    monkeypatch.setenv(ENV_URL, "http://127.0.0.1:9")  # never a download, whatever the folder holds
    out = tmp_path / "eval"
    argv = ["eval", card.ref, "--dataset", "cifar10", "--data-dir", str(folder), "--out", str(out)]
    code, _, err = run_cli(argv)
    assert code == 0, err
    measured = json.loads((out / "eval-test.json").read_text())
    assert measured["images"] == 10_000 and measured["precision"] == "fp32"
    claimed = card.result_on(CIFAR10)
    assert claimed is not None
    top1 = 100 * (1 - measured["top1_error"])
    assert abs(top1 - claimed.top1) <= 100 * IMAGES_THAT_MAY_FLIP / 10_000 + 1e-9, (top1, claimed.top1)
    top5 = 100 * (1 - measured["top5_error"])
    assert abs(top5 - claimed.top5) <= 100 * IMAGES_THAT_MAY_FLIP / 10_000 + 1e-9, (top5, claimed.top5)
