"""Our in-package weights trained on the official CIFAR-10 score what their cards say on the official
test set, through the same `resnetlab eval` a user runs.

The card's number is the final evaluation of the run that trained the weights; this evaluates the
shipped file, so it catches a file that is not the run's final weights, a wrong normalisation in the
exported config, or a card written from another run. It reads the real data in ../shared/data and
skips when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import run_cli
from resnetlab.weights.card import CIFAR10, OURS
from resnetlab.weights.registry import WEIGHTS
from test_cifar_folder_md5 import real_folder

OFFICIAL_OURS = [c for c in WEIGHTS if c.publisher == OURS and c.trained_on == CIFAR10]

# A float32 forward pass sums in another order on another CPU (AVX2 or AVX-512 kernels, thread
# count), which can move an image that sits on a decision boundary: allow 2 of the 10,000 images.
IMAGES_THAT_MAY_FLIP = 2


@pytest.mark.parametrize("card", OFFICIAL_OURS, ids=lambda c: c.ref)
def test_shipped_official_weights_score_their_card_on_the_official_test_set(
    card, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = real_folder()
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))  # the decoded copy goes here
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
