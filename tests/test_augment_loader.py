"""The paper's CIFAR pipeline: vectorised pad-crop-flip, normalisation, resumable sharded batches."""

from __future__ import annotations

import pytest
import torch

from resnetlab.data.augment import Normalizer, apply_crop_flip, draw_crop_flip, random_crop_flip
from resnetlab.data.loader import ImageSet, TensorBatches
from resnetlab.data.splits import split_train_val
from resnetlab.errors import UserError


def _images(n: int = 64, size: int = 8, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 10)


def _reference_crop_flip(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int
) -> torch.Tensor:
    """One image at a time, the obvious way: zero-pad, slice, maybe flip."""
    out = []
    _, _, h, w = images.shape
    for image, (top, left), flip in zip(images, offsets.tolist(), flips.tolist(), strict=True):
        padded = torch.zeros(image.shape[0], h + 2 * pad, w + 2 * pad, dtype=image.dtype)
        padded[:, pad : pad + h, pad : pad + w] = image
        crop = padded[:, top : top + h, left : left + w]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


@pytest.mark.parametrize("pad", [4, 2])
def test_vectorised_crop_flip_equals_the_per_sample_reference(pad):
    images = _images(n=200, size=8).images
    offsets, flips = draw_crop_flip(len(images), torch.Generator().manual_seed(3), pad=pad)
    assert offsets.min() == 0 and offsets.max() == 2 * pad  # every offset reachable
    assert 0 < flips.sum() < len(flips)
    assert torch.equal(
        apply_crop_flip(images, offsets, flips, pad), _reference_crop_flip(images, offsets, flips, pad)
    )


def test_crop_flip_is_seeded():
    images = _images().images
    a = random_crop_flip(images, torch.Generator().manual_seed(1))
    b = random_crop_flip(images, torch.Generator().manual_seed(1))
    c = random_crop_flip(images, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == images.shape and a.dtype == torch.uint8
    _, no_flips = draw_crop_flip(10, torch.Generator().manual_seed(0), flip=False)
    assert not no_flips.any()


def test_per_pixel_and_per_channel_normalizers():
    images = _images(n=300).images
    pixel = Normalizer.fit(images, "per-pixel")
    assert pixel.mean.shape == (3, 8, 8) and pixel.std is None
    assert torch.allclose(pixel(images).mean(0), torch.zeros(3, 8, 8), atol=1e-5)
    channel = Normalizer.fit(images, "per-channel")
    out = channel(images)
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(out.std((0, 2, 3)), torch.ones(3), atol=1e-2)
    restored = Normalizer.from_state_dict(channel.state_dict())
    assert torch.equal(restored(images), out)
    with pytest.raises(ValueError, match="normalisation must be one of"):
        Normalizer.fit(images, "per-image")


def _all(batches: TensorBatches, epoch: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(batches.epoch(epoch, start))


def _loader(data: ImageSet, **kw) -> TensorBatches:
    return TensorBatches(data, kw.pop("batch_size", 16), Normalizer.fit(data.images), **kw)


def test_training_batches_are_seeded_shuffled_and_augmented():
    data = _images(n=70)
    batches = _loader(data, train=True, seed=5)
    assert batches.batches_per_epoch == len(batches) == 4  # full batches only: 70 // 16
    first, again = _all(batches), _all(_loader(data, train=True, seed=5))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0][1], _all(batches, epoch=1)[0][1])  # a new shuffle per epoch
    assert not torch.equal(first[0][0], _all(_loader(data, train=True, seed=6))[0][0])
    labels = torch.cat([y for _, y in first])
    assert len(labels.unique()) == 10 and len(labels) == 64
    plain = _all(_loader(data, train=True, seed=5, augment=False))
    assert torch.equal(plain[0][1], first[0][1]) and not torch.equal(plain[0][0], first[0][0])


def test_resume_at_step_s_equals_the_rest_of_the_epoch():
    data = _images(n=100)
    batches = _loader(data, train=True, seed=1)
    full = _all(batches, epoch=3)
    for start in (1, 4):
        resumed = _all(_loader(data, train=True, seed=1), epoch=3, start=start)
        assert len(resumed) == len(full) - start
        for a, b in zip(full[start:], resumed, strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_shards_concatenate_to_the_single_process_batch(world_size):
    data = _images(n=80)
    single = _all(_loader(data, train=True, seed=2), epoch=1)
    shards = [
        _all(_loader(data, train=True, seed=2, rank=r, world_size=world_size), epoch=1)
        for r in range(world_size)
    ]
    for step, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([s[step][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[step][1] for s in shards]), y)


@pytest.mark.parametrize(("world_size", "n"), [(1, 50), (2, 50), (4, 37)])
def test_evaluation_covers_every_image_once_unaugmented(world_size, n):
    data = ImageSet(_images(n=n).images, torch.arange(n))  # the label is the image's index
    norm = Normalizer.fit(data.images)
    seen_x, seen_y = [], []
    for rank in range(world_size):
        batches = TensorBatches(data, 16, norm, train=False, rank=rank, world_size=world_size)
        assert batches.batches_per_epoch == -(-n // 16)
        for x, y in batches.epoch(0):
            seen_x.append(x)
            seen_y.append(y)
    ids = torch.cat(seen_y)
    assert sorted(ids.tolist()) == list(range(n))
    assert torch.equal(torch.cat(seen_x)[ids.argsort()], norm(data.images))  # each image as it is


def test_loader_argument_checks():
    data = _images(n=20)
    with pytest.raises(ValueError, match="multiple of 3 ranks"):
        _loader(data, train=True, batch_size=16, world_size=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        _loader(data, train=True, batch_size=32)


def test_split_train_val_is_a_fixed_disjoint_partition():
    data = ImageSet(
        torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 2, 2).clone(),
        torch.arange(100),
    )
    train, val = split_train_val(data, val_size=10, seed=0)
    assert len(train) == 90 and len(val) == 10
    assert sorted(torch.cat([train.labels, val.labels]).tolist()) == list(range(100))
    assert torch.equal(train.images[:, 0, 0, 0].long(), train.labels)  # images stay with their labels
    again = split_train_val(data, val_size=10, seed=0)[1]
    assert torch.equal(again.labels, val.labels)
    assert not torch.equal(split_train_val(data, val_size=10, seed=1)[1].labels, val.labels)
    cifar_sized = ImageSet(torch.zeros(50_000, 3, 1, 1, dtype=torch.uint8), torch.zeros(50_000))
    assert [len(s) for s in split_train_val(cifar_sized)] == [45_000, 5_000]  # the paper's split
    with pytest.raises(UserError, match="validation size"):
        split_train_val(data, val_size=100)


def test_partial_evaluation_of_class_sorted_data_sees_every_class() -> None:
    # Image folders load sorted by class; a partial evaluation (eval_limit) must still be a fair
    # sample, not the first class only (a bug the first real-data demo showed).
    labels = torch.arange(10).repeat_interleave(100)
    data = ImageSet(torch.zeros(1000, 3, 4, 4, dtype=torch.uint8), labels)
    batches = TensorBatches(data, 100, Normalizer.fit(data.images), train=False)
    _, first = next(batches.epoch(0))
    assert len(first.unique()) == 10
    again = torch.cat([y for _, y in batches.epoch(0)])
    assert torch.equal(again.sort().values, labels)
