"""``folder:PATH``: ImageFolder layout of small images, decoded once into a keyed uint8 cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.cli import main
from resnetlab.data import folder
from resnetlab.data.datasets import load_dataset
from resnetlab.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _pixels(seed: int, size: tuple[int, int] = (8, 6)) -> np.ndarray:
    """A random RGB image of (width, height) ``size`` as (H, W, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def write_image(path: Path, pixels: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)


def make_folder(root: Path, splits: dict[str, dict[str, int]], ext: str = ".png") -> dict[str, np.ndarray]:
    """Write ``splits[split][class]`` lossless images; return {relative path: pixels}."""
    written = {}
    seed = 0
    for split, classes in splits.items():
        for cls, count in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed += 1
                rel = f"{split}/{cls}/{i:03d}{ext}"
                written[rel] = _pixels(seed)
                write_image(root / rel, written[rel])
    return written


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "data"
    written = make_folder(root, {"train": {"dog": 3, "cat": 2}, "test": {"dog": 1, "cat": 2}})
    return root, written


def _chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)


def test_loads_exact_pixels_labels_and_sorted_classes(small, tmp_path):
    root, written = small
    data = folder.load_folder(root, cache_dir=tmp_path / "cache")
    assert data.classes == ["cat", "dog"] and data.val is None
    assert data.spec == f"folder:{root}" and data.image_size == (6, 8)
    assert data.train.images.shape == (5, 3, 6, 8) and data.test.images.shape == (3, 3, 6, 8)
    # Files are ordered by class, then name; PNG is lossless so pixels must match exactly.
    expected = [written[f"train/{c}/{i:03d}.png"] for c, n in (("cat", 2), ("dog", 3)) for i in range(n)]
    assert torch.equal(data.train.images, torch.stack([_chw(p) for p in expected]))
    assert data.train.labels.tolist() == [0, 0, 1, 1, 1] and data.test.labels.tolist() == [0, 0, 1]


def test_jpeg_grayscale_bmp_nested_and_non_images(tmp_path):
    root = tmp_path / "data"
    smooth = np.broadcast_to(np.linspace(0, 250, 8, dtype=np.uint8)[None, :, None], (6, 8, 3)).copy()
    write_image(root / "train/a/x.jpg", smooth, "JPEG")
    gray = _pixels(2)[:, :, 0]
    write_image(root / "train/a/sub/y.PNG", gray)
    write_image(root / "train/b/z.bmp", _pixels(3), "BMP")  # torchvision cannot; Pillow does
    (root / "train/b/README.txt").write_text("not an image")
    (root / "train/b/.hidden.png").write_bytes(b"ignored")
    write_image(root / "val/a/v.png", _pixels(4))
    write_image(root / "val/b/w.png", _pixels(5))
    data = folder.load_folder(root, cache_dir=tmp_path / "cache")
    assert len(data.train) == 3 and len(data.val) == 2 and data.test is None
    # Sorted by path within a class: a/sub/y.PNG, a/x.jpg, then b/z.bmp.
    assert torch.equal(data.train.images[0], _chw(np.stack([gray] * 3, axis=2)))
    jpeg = data.train.images[1].float()
    assert (jpeg - _chw(smooth).float()).abs().max() < 12  # lossy, but the same picture
    assert torch.equal(data.train.images[2], _chw(_pixels(3)))


def test_cache_is_used_keyed_and_kept_out_of_the_data(small, tmp_path, monkeypatch):
    root, _ = small
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    first = folder.load_folder(root, cache_dir=tmp_path / "cache")
    assert first.cache_path.parent == tmp_path / "cache" / "folders"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written beside the data

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(folder, "decode_files", no_decoding)
    second = folder.load_folder(root, cache_dir=tmp_path / "cache")
    assert torch.equal(first.train.images, second.train.images) and second.cache_path == first.cache_path
    monkeypatch.undo()
    # Replacing one image (new size and mtime) makes a new cache with the new pixels; the old one goes.
    changed = _pixels(99)
    write_image(root / "train/cat/000.png", changed)
    os.utime(root / "train/cat/000.png", ns=(1, 1))
    third = folder.load_folder(root, cache_dir=tmp_path / "cache")
    assert third.cache_path != first.cache_path and not first.cache_path.exists()
    assert torch.equal(third.train.images[0], _chw(changed))
    assert [p.name for p in (tmp_path / "cache" / "folders").iterdir()] == [third.cache_path.name]


def test_unwritable_cache_dir_warns_and_still_loads(small, tmp_path):
    root, _ = small
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the cache directory should be")
    with pytest.warns(UserWarning, match="could not write the decoded cache"):
        data = folder.load_folder(root, cache_dir=blocker)
    assert data.cache_path is None and len(data.train) == 5


def test_worker_pool_matches_in_process_decoding(small, monkeypatch):
    root, written = small
    paths = [str(root / rel) for rel in sorted(written)]
    monkeypatch.setattr(folder, "CHUNK", 3)  # several chunks, so the pool is really used
    serial = folder.decode_files(paths, skip_bad_images=False, workers=0)
    pooled = folder.decode_files(paths, skip_bad_images=False, workers=2)
    assert torch.equal(serial[0], pooled[0]) and serial[1] == pooled[1] == list(range(len(paths)))
    assert torch.equal(serial[0][0], _chw(written[sorted(written)[0]]))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda r: (r / "nowhere").rename(r / "nowhere"), None),
        (lambda r: (r / "train").rename(r / "training"), "has no train/ folder"),
        (lambda r: (r / "test").rename(r / "holdout"), "neither val/ nor test/"),
        (
            lambda r: [p.unlink() for p in (r / "train/dog").iterdir()],
            "class folder .*train/dog has no images",
        ),
        (lambda r: (r / "test/cat").rename(r / "test/kitten"), "missing cat; extra kitten"),
    ],
    ids=["missing-folder", "no-train", "no-eval-split", "empty-class", "class-mismatch"],
)
def test_layout_errors(small, tmp_path, damage, match):
    root, _ = small
    if match is None:
        root = tmp_path / "does-not-exist"
        match = "does-not-exist does not exist"
    else:
        damage(root)
    with pytest.raises(UserError, match=match) as err:
        folder.load_folder(root, cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_a_file_instead_of_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        folder.load_folder(tmp_path / "f")


def _corrupt(root: Path) -> tuple[Path, Path]:
    jpeg = root / "train/dog/bad.jpg"
    write_image(jpeg, _pixels(7), "JPEG")
    jpeg.write_bytes(jpeg.read_bytes()[:60])  # truncated
    junk = root / "test/cat/junk.png"
    junk.write_bytes(b"this is not a png")
    return jpeg, junk


def test_corrupt_image_is_named(small, tmp_path):
    root, _ = small
    jpeg, _ = _corrupt(root)
    with pytest.raises(UserError, match=rf"cannot decode image {jpeg} .*--skip-bad-images") as err:
        folder.load_folder(root, cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "folders").exists()


def test_skip_bad_images_warns_with_count_and_names(small, tmp_path):
    root, written = small
    jpeg, junk = _corrupt(root)
    with pytest.warns(UserWarning, match="skipped 2 unreadable image") as caught:
        data = folder.load_folder(root, cache_dir=tmp_path / "cache", skip_bad_images=True)
    message = str(caught[0].message)
    assert str(jpeg) in message and str(junk) in message
    assert len(data.train) == 5 and len(data.test) == 3
    # The good images keep their labels: train/dog/bad.jpg sorted first among the dogs.
    assert data.train.labels.tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(data.train.images[2], _chw(written["train/dog/000.png"]))
    # The cache remembers what was skipped: without the flag the same file is still an error.
    with pytest.raises(UserError, match=f"cannot decode image {jpeg}"):
        folder.load_folder(root, cache_dir=tmp_path / "cache")


def test_mixed_sizes_name_both_sizes_and_files(small, tmp_path):
    root, _ = small
    write_image(root / "test/dog/big.png", _pixels(5, size=(20, 10)))
    with pytest.raises(UserError) as err:
        folder.load_folder(root, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "8x6 (" in message and f"20x10 ({root.resolve()}/test/dog/big.png)" in message
    assert "imagenet:PATH" in message


def test_load_dataset_dispatch(small, tmp_path):
    root, _ = small
    data = load_dataset(f"folder:{root}", tmp_path / "cache")
    assert data.classes == ["cat", "dog"] and data.cache_path.is_relative_to(tmp_path / "cache")


@pytest.fixture(scope="module")
def cifar10_jpeg_cache(tmp_path_factory) -> Path:
    if not (SHARED_DATA / "cifar10-jpeg" / "train").is_dir():
        pytest.skip(f"{SHARED_DATA / 'cifar10-jpeg'} is not on this machine")
    return tmp_path_factory.mktemp("cifar10-jpeg-cache")


@pytest.mark.slow
def test_real_cifar10_jpeg_folder(cifar10_jpeg_cache):
    data = folder.load_folder(SHARED_DATA / "cifar10-jpeg", cache_dir=cifar10_jpeg_cache)
    assert data.train.images.shape == (50_000, 3, 32, 32) and data.test.images.shape == (10_000, 3, 32, 32)
    assert data.classes[:3] == ["airplane", "automobile", "bird"] and len(data.classes) == 10
    assert data.train.labels.bincount().tolist() == [5000] * 10
    assert data.test.labels.bincount().tolist() == [1000] * 10


@pytest.mark.slow
def test_real_cifar10_jpeg_cli_info_from_cache(cifar10_jpeg_cache, capsys, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    folder.load_folder(SHARED_DATA / "cifar10-jpeg", cache_dir=cifar10_jpeg_cache)  # no-op if cached
    monkeypatch.setattr(folder, "decode_files", no_decoding)
    spec = f"folder:{SHARED_DATA / 'cifar10-jpeg'}"
    assert main(["data", "info", "--dataset", spec, "--data-dir", str(cifar10_jpeg_cache)]) == 0
    out = capsys.readouterr().out
    assert "train    50,000 images" in out and "test     10,000 images" in out
    assert "classes  10: airplane, automobile" in out and str(cifar10_jpeg_cache) in out
