"""`resnetlab eval` and `resnetlab predict` on a checkpoint, and the evaluator they share."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_runner import one_line_error, run_cli
from resnetlab.data.augment import Normalizer
from resnetlab.data.loader import ImageSet, TensorBatches
from resnetlab.data.synthetic import synthetic
from resnetlab.engine import TrainConfig, train
from resnetlab.engine.distributed import DistContext
from resnetlab.engine.evaluate import TenCropBatches, evaluate
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.evaluation import load_image
from resnetlab.models import build_model
from resnetlab.recipes import get_recipe
from tiny import LEARNABLE_DATA, LEARNABLE_NET, TINY_NET, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = tiny_config(
        out,
        model_overrides=LEARNABLE_NET,
        dataset=LEARNABLE_DATA,
        iterations=30,
        val_split=64,
        log_every=10,
        eval_every=30,
    )
    return train(config)


def test_eval_reports_and_saves_errors_and_confusion(run, tmp_path):
    code, out, err = run_cli(["eval", str(run.out), "--out", str(tmp_path)])
    assert code == 0, err
    record = json.loads((tmp_path / "eval-test.json").read_text())
    assert (tmp_path / "confusion-test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    confusion = np.array(record["confusion"])
    assert record["images"] == confusion.sum() == 64
    assert record["top1_error"] == pytest.approx(1 - np.trace(confusion) / 64)
    rows = confusion.sum(1)
    for c, acc in enumerate(record["per_class_accuracy"]):
        assert acc is None if rows[c] == 0 else acc == pytest.approx(confusion[c, c] / rows[c])
    # The same model on the same split as the trainer's final evaluation.
    assert record["top1_error"] == pytest.approx(run.summary["final"]["test_top1_error"])
    assert "top-1 error" in out and "confusion matrix" in out and "class9" in out


def test_eval_on_the_runs_validation_split(run, tmp_path):
    code, _, err = run_cli(["eval", str(run.out / "checkpoint.pt"), "--split", "val", "--out", str(tmp_path)])
    assert code == 0, err
    record = json.loads((tmp_path / "eval-val.json").read_text())
    assert record["images"] == 64
    assert record["top1_error"] == pytest.approx(run.summary["final"]["val_top1_error"])


def test_eval_ten_crop(run, tmp_path):
    code, out, err = run_cli(["eval", str(run.out), "--ten-crop", "--out", str(tmp_path)])
    assert code == 0, err
    record = json.loads((tmp_path / "eval-test-10crop.json").read_text())
    assert record["ten_crop"] and record["images"] == 64 and "10-crop" in out


def test_ten_crop_views_are_corners_centre_and_flips():
    data = synthetic(8, 8, 16, 3).test
    norm = Normalizer.fit(data.images)
    x, y = next(iter(TenCropBatches(data, 4, norm, pad=4)))
    assert x.shape == (4, 10, 3, 16, 16) and torch.equal(y, data.labels[:4])
    original = norm(data.images[:4])
    assert torch.equal(x[:, 4], original)  # the centre of the padded image is the image itself
    assert torch.equal(x[:, 9], norm(data.images[:4].flip(-1)))  # flipped, then the mean image off
    assert not torch.equal(x[:, 0], original)


def test_evaluate_averages_views_and_marks_empty_classes():
    torch.manual_seed(0)
    model = build_model("resnet20", **TINY_NET, num_classes=4)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    single = evaluate(model, [(x, y)], "cpu", 4)
    repeated = evaluate(model, [(x[:, None].expand(6, 3, 3, 8, 8), y)], "cpu", 4)
    assert repeated["top1_error"] == single["top1_error"]
    assert repeated["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert np.isnan(single["per_class_accuracy"][3]) and single["images"] == 6
    assert single["top5_error"] == 0.0  # 4 classes: the top 4 always contain the label


def test_eval_limit_is_exact_and_always_the_same_images():
    torch.manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8), torch.arange(300) % 10)
    batches = TensorBatches(data, 256, Normalizer.fit(data.images, "per-channel"), train=False)
    model = build_model("resnet20", **TINY_NET)
    first = evaluate(model, batches, "cpu", 10, limit=200)
    assert first["images"] == 200
    torch.nn.init.normal_(model.fc.weight)
    again = evaluate(model, batches, "cpu", 10, limit=200)
    counts = [[sum(row) for row in r["confusion"]] for r in (first, again)]
    assert counts[0] == counts[1] and sum(counts[0]) == 200  # the same images, class by class
    assert evaluate(model, batches, "cpu", 10, limit=1000)["images"] == 300


@pytest.mark.parametrize("limit", [1, 5, 100, 200])
def test_eval_limit_is_exact_across_ranks(monkeypatch, limit):
    """Each rank takes its strided share of the first ``limit`` images; together exactly ``limit``."""
    data = ImageSet(torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8), torch.arange(300) % 10)
    model = build_model("resnet20", **TINY_NET)
    seen = 0
    for rank in range(3):
        ctx = DistContext(rank, 3, torch.device("cpu"))
        monkeypatch.setattr(ctx, "all_reduce", lambda tensor, op="sum": tensor)  # one rank's own share
        share = TensorBatches(
            data, 96, Normalizer.fit(data.images, "per-channel"), train=False, rank=rank, world_size=3
        )
        seen += evaluate(model, share, "cpu", 10, limit=limit, ctx=ctx)["images"]
    assert seen == limit


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dataset", "synthetic:256,64,16,5"], "classes"),
        (["--dataset", "synthetic:256,64,8,10"], "expects (16, 16)"),
        (["--dataset", "synthetic:128,64,16,10", "--split", "val"], "no val split"),
        (["--split", "train"], "invalid choice"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_eval_bad_inputs(run, tmp_path, args, fragment):
    assert fragment in one_line_error(["eval", str(run.out), "--out", str(tmp_path), *args])


def test_eval_missing_checkpoint(tmp_path):
    code, _, err = run_cli(["eval", str(tmp_path / "nope.pt")])
    assert code == 2 and "nope.pt" in err


def write_png(path: Path, image: torch.Tensor) -> Path:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


def test_predict_top5_from_the_checkpoint(run, tmp_path):
    data = synthetic(256, 64, 16, 10).test
    paths = [write_png(tmp_path / f"img{i}.png", data.images[i]) for i in range(2)]
    code, out, err = run_cli(["predict", str(run.out), *map(str, paths), "--json"])
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in results] == [str(p) for p in paths]
    ckpt = torch.load(run.out / "checkpoint.pt", weights_only=True)
    model = model_from_checkpoint(ckpt)
    norm = Normalizer.from_state_dict(ckpt["normalizer"])
    with torch.no_grad():
        probs = torch.softmax(model(norm(data.images[:2])), 1)
    for r, p in zip(results, probs, strict=True):
        top = r["top"]
        assert len(top) == 5 and all(a["probability"] >= b["probability"] for a, b in itertools.pairwise(top))
        best = int(p.argmax())
        assert top[0]["class"] == ckpt["classes"][best]
        assert top[0]["probability"] == pytest.approx(p[best].item(), abs=1e-5)


def test_predict_resizes_other_sizes(run, tmp_path):
    big = write_png(tmp_path / "big.png", torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8))
    code, out, err = run_cli(["predict", str(run.out), str(big)])
    assert code == 0, err
    assert out.startswith(f"{big}:") and out.count("%") == 5


def test_imagenet_style_images_get_the_centre_crop(tmp_path):
    path = write_png(tmp_path / "wide.png", torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8))
    assert load_image(path, [224, 224], imagenet_style=True).shape == (3, 224, 224)


@pytest.mark.parametrize("kind", ["missing", "unreadable", "top-zero"])
def test_predict_bad_inputs(run, tmp_path, kind):
    image = tmp_path / "x.png"
    extra = []
    if kind == "unreadable":
        image.write_text("not an image")
    elif kind == "top-zero":
        write_png(image, torch.zeros(3, 16, 16, dtype=torch.uint8))
        extra = ["--top", "0"]
    err = one_line_error(["predict", str(run.out), str(image), *extra])
    assert ("--top" in err) if kind == "top-zero" else (str(image) in err)


def test_streamed_imagenet_style_folder_trains_and_evaluates_ten_crop(tmp_path):
    """imagenet:PATH goes through the streaming loader: train, 10-crop eval and predict at 224x224."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (240, 300, 3), dtype=np.uint8)).save(
                    tmp_path / split / c / f"{i}.jpg"
                )
    config = TrainConfig(
        model="resnet18",
        model_overrides={"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 8]},
        dataset=f"imagenet:{tmp_path}",
        recipe=get_recipe("imagenet-paper", batch_size=8),
        out=tmp_path / "run",
        iterations=2,
        quiet=True,
    )
    result = train(config)
    assert result.summary["final"]["split"] == "val" and result.summary["final"]["val_top1_error"] is not None
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["image_size"] == [224, 224] and ckpt["classes"] == ["cat", "dog"]
    code, out, err = run_cli(["eval", str(tmp_path / "run"), "--ten-crop", "--batch-size", "4"])
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "eval-val-10crop.json").read_text())["images"] == 8
    image = tmp_path / "val" / "cat" / "0.jpg"
    code, out, err = run_cli(["predict", str(tmp_path / "run"), str(image), "--top", "2"])
    assert code == 0 and out.count("%") == 2, err


def test_eval_flip_averages_each_image_with_its_mirror(run, tmp_path):
    """--flip scores the mirror too: the same images, a different loss, its own record; with
    --ten-crop (which has mirrors of its own) it is one error line."""
    code, out, err = run_cli(["eval", str(run.out), "--flip", "--out", str(tmp_path)])
    assert code == 0, err
    flipped = json.loads((tmp_path / "eval-test-flip.json").read_text())
    assert flipped["flip"] is True and flipped["images"] == 64 and flipped["precision"] == "fp32"
    assert "image + mirror" in out
    code, _, _ = run_cli(["eval", str(run.out), "--out", str(tmp_path)])
    single = json.loads((tmp_path / "eval-test.json").read_text())
    assert flipped["loss"] != pytest.approx(single["loss"], rel=1e-4)
    code, _, err = run_cli(["eval", str(run.out), "--flip", "--ten-crop", "--out", str(tmp_path)])
    assert code == 2 and err.count("\n") == 1 and "give one of them" in err
