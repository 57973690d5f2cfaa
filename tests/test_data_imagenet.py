"""``imagenet:PATH``: streamed large JPEGs with the paper's train transform, centre crop and 10-crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.cli import main
from resnetlab.data import imagenet
from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.errors import UserError

SIZES = [(300, 260), (500, 350), (260, 300)]  # (width, height): landscape and portrait, all > 256


def _picture(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth random picture (JPEG-friendly) with a red left half and a blue right half."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 1, w)[None, :, None] * rng.uniform(40, 90, 3) + rng.uniform(0, 40, 3)
    image = np.broadcast_to(base, (h, w, 3)).copy()
    image[:, : w // 2, 0] += 150
    image[:, w // 2 :, 2] += 150
    return image.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    seed = 0
    for split, per_class in (("train", 3), ("val", 2)):
        for cls in ("n01", "n02"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                seed += 1
                size = SIZES[seed % len(SIZES)]
                Image.fromarray(_picture(seed, size)).save(root / split / cls / f"{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def splits(jpegs):
    return imagenet.load_imagenet_folder(jpegs)


ZERO_MEAN = Normalizer(torch.zeros(3, 1, 1), None, "per-pixel")  # output = pixels / 255


def _batches(split, batch_size=2, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("normalizer", ZERO_MEAN)
    kw.setdefault("seed", 0)
    return imagenet.imagenet_batches(split, batch_size, **kw)


def _epoch(batches, epoch=0, start=0):
    return list(batches.epoch(epoch, start))


def test_listing_is_lazy_and_complete(splits, jpegs):
    assert splits.classes == ["n01", "n02"] and splits.train is None and splits.image_size is None
    assert set(splits.streams) == {"train", "val"}
    train = splits.streams["train"]
    assert len(train) == 6 and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.path(4) == str(jpegs / "train" / "n02" / "1.JPEG")
    assert load_dataset(f"imagenet:{jpegs}").streams["val"].labels.tolist() == [0, 0, 1, 1]


def test_train_batches_shape_dtype_and_seeded_determinism(splits):
    train = splits.streams["train"]
    batches = _batches(train, train=True)
    assert batches.batches_per_epoch == 3
    first = _epoch(batches)
    assert len(first) == 3
    for x, y in first:
        assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    again = _epoch(_batches(train, train=True))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    other_seed = _epoch(_batches(train, train=True, seed=1))
    next_epoch = _epoch(batches, epoch=1)
    assert not torch.equal(first[0][0], other_seed[0][0]) and not torch.equal(first[0][0], next_epoch[0][0])
    # Every training image appears once per epoch (6 images, 3 full batches).
    assert sorted(torch.cat([y for _, y in first]).tolist()) == [0, 0, 0, 1, 1, 1]


def test_train_scale_range_is_the_papers(splits, monkeypatch):
    sizes = []
    resize = imagenet.F.resize

    def recording(image, size, **kw):
        sizes.append(size[0])
        return resize(image, size, **kw)

    monkeypatch.setattr(imagenet.F, "resize", recording)
    train = splits.streams["train"]
    for epoch in range(4):
        _epoch(_batches(train, batch_size=6, train=True), epoch)
    assert len(sizes) == 24 and all(256 <= s <= 480 for s in sizes) and len(set(sizes)) > 10


def test_resume_and_shards_equal_the_full_epoch(splits):
    train = splits.streams["train"]
    full = _epoch(_batches(train, train=True), epoch=2)
    resumed = _epoch(_batches(train, train=True), epoch=2, start=1)
    assert len(resumed) == 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[1:], resumed, strict=True))
    ranks = [_epoch(_batches(train, train=True, rank=r, world_size=2), epoch=2) for r in range(2)]
    for step, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([ranks[0][step][0], ranks[1][step][0]]), x)
        assert torch.equal(torch.cat([ranks[0][step][1], ranks[1][step][1]]), y)


def test_worker_processes_give_the_same_batches(splits):
    train = splits.streams["train"]
    inline = _epoch(_batches(train, train=True))
    workers = _epoch(_batches(train, train=True, workers=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(inline, workers, strict=True))


def test_lighting_follows_the_principal_components():
    eigvec, eigval = imagenet.EIGVEC, imagenet.EIGVAL
    assert torch.allclose(eigvec.T @ eigvec, torch.eye(3), atol=1e-3)  # columns are unit eigenvectors
    alpha = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    shift = imagenet.lighting(alpha)
    assert torch.allclose(shift[0], eigval[0] * eigvec[:, 0])
    assert torch.allclose(shift[1], 2 * eigval[2] * eigvec[:, 2])
    assert torch.equal(shift[2], torch.zeros(3))


def test_eval_centre_crop_is_deterministic_and_unaugmented(splits):
    val = splits.streams["val"]
    batches = _batches(val, batch_size=3, train=False)
    assert batches.batches_per_epoch == 2
    first = _epoch(batches)
    assert [x.shape[0] for x, _ in first] == [3, 1]
    assert sorted(torch.cat([y for _, y in first]).tolist()) == [0, 0, 1, 1]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, _epoch(batches, epoch=5), strict=True))
    x = first[0][0]
    assert x.min() >= 0 and x.max() <= 1  # zero mean, no lighting: plain pixels / 255
    # The pictures are red on the left and blue on the right; the centre crop keeps both halves.
    assert (x[:, 0, :, :20].mean() > x[:, 2, :, :20].mean()) and (
        x[:, 2, :, -20:].mean() > x[:, 0, :, -20:].mean()
    )


def test_ten_crop_corners_centre_and_flips(splits):
    val = splits.streams["val"]
    centre = _epoch(_batches(val, batch_size=4, train=False))[0][0]
    ten = _epoch(_batches(val, batch_size=4, train=False, ten_crop=True))[0][0]
    assert ten.shape == (4, 10, 3, 224, 224) and ten.dtype == torch.float32
    assert torch.allclose(ten[:, 4], centre)  # the fifth crop is the centre one
    assert torch.allclose(ten[:, 5], ten[:, 1].flip(-1))  # flipped image's top-left = top-right flipped
    assert torch.allclose(ten[:, 6], ten[:, 0].flip(-1))
    assert torch.allclose(ten[:, 7], ten[:, 3].flip(-1)) and torch.allclose(ten[:, 8], ten[:, 2].flip(-1))


def test_eval_shards_cover_every_image_once(splits):
    val = splits.streams["val"]
    single = torch.cat([x for x, _ in _epoch(_batches(val, batch_size=4, train=False))])
    shares = [_epoch(_batches(val, batch_size=2, train=False, rank=r, world_size=2)) for r in range(2)]
    rows = {r: torch.cat([x for x, _ in shares[r]]) for r in range(2)}
    assert torch.equal(rows[0], single[0::2]) and torch.equal(rows[1], single[1::2])


def test_normalizer_fitting_and_requirements(splits):
    train, val = splits.streams["train"], splits.streams["val"]
    norm = imagenet.fit_normalizer(train, samples=4, seed=0)
    assert norm.mode == "per-pixel" and norm.mean.shape == (3, 224, 224)
    assert torch.equal(norm.mean, imagenet.fit_normalizer(train, samples=4, seed=0).mean)
    assert norm.mean.min() > 0 and norm.mean.max() < 1
    x, _ = next(_batches(train, batch_size=6, train=True, normalizer=None).epoch(0))
    assert abs(float(x.mean())) < 0.1  # mean-subtracted
    with pytest.raises(ValueError, match="training split's normalizer"):
        imagenet.imagenet_batches(val, 2, train=False, seed=0, normalizer=None)
    with pytest.raises(ValueError, match="evaluation transform"):
        _batches(val, train=True, ten_crop=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_jpeg_is_one_line_naming_the_file(tmp_path, workers):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(_picture(1, (300, 260))).save(tmp_path / split / "a" / "good.jpg")
    bad = tmp_path / "train" / "a" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    train = imagenet.load_imagenet_folder(tmp_path).streams["train"]
    with pytest.raises(UserError) as err:
        _epoch(_batches(train, train=True, workers=workers))
    assert str(err.value).startswith(f"cannot decode image {bad}") and "\n" not in str(err.value)


def test_cli_info_for_a_streamed_dataset(jpegs, capsys):
    import json

    assert main(["data", "info", "--dataset", f"imagenet:{jpegs}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"] == 6 and out["val"] == 4 and out["test"] is None
    assert out["classes"] == ["n01", "n02"] and out["image_size"] is None and out["streamed"] is True
