"""Small-image datasets in the ImageFolder layout (``folder:PATH``), decoded once and cached.

Layout: ``PATH/train/<class>/*`` and at least one of ``PATH/val/<class>/*``, ``PATH/test/<class>/*``
with the same class folders; class names are the sorted folder names of ``train``. Every image is
decoded to RGB uint8 in a pool of worker processes, all images must share one size, and the result is
saved under the cache root (never next to the data, which may be read-only) in a file keyed by a hash
of the folder's resolved path and every file's relative path, size and modification time: touching,
adding or removing an image makes a new cache, and a later run with nothing changed only lists the
folder and loads the tensors (about a second for CIFAR-10's 60,000 images).
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import re
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from resnetlab.data.cache import cache_root, load_tensors, save_tensors
from resnetlab.data.loader import ImageSet
from resnetlab.data.splits import DatasetSplits
from resnetlab.errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"})
EVAL_SPLITS = ("val", "test")
CACHE_FORMAT = 1
CHUNK = 512  # images per task sent to a decoding worker
LIST_SKIPPED = 10  # how many skipped files a warning names
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class FolderSplit:
    """One split's image files (relative to the dataset root), labels and (size, mtime_ns) stats."""

    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    stats: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class FolderLayout:
    """A checked ImageFolder tree: its resolved root, class names and splits (train, val and/or test)."""

    root: Path
    classes: list[str]
    splits: dict[str, FolderSplit]


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _image_files(root: Path, relative: str, stats: bool) -> list[tuple[str, tuple[int, int]]]:
    """(path relative to ``root``, (size, mtime_ns)) of every image under ``root/relative``, sorted."""
    found = []
    stack = [relative]
    while stack:
        rel = stack.pop()
        for entry in os.scandir(root / rel):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                stack.append(f"{rel}/{entry.name}")
            elif "." + entry.name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS:
                st = entry.stat() if stats else None
                found.append((f"{rel}/{entry.name}", (st.st_size, st.st_mtime_ns) if st else (0, 0)))
    return sorted(found)


def scan_image_folder(path: Path, *, stats: bool = True) -> FolderLayout:
    """Check the ImageFolder layout under ``path`` and list its images (with size/mtime if ``stats``).

    Raises :class:`UserError` for a missing folder, no train split, neither val nor test, a split
    without class folders, an empty class, or eval classes that differ from train's.
    """
    if not path.exists():
        raise UserError(
            f"dataset folder {path} does not exist: check the PATH in folder:PATH / imagenet:PATH"
        )
    if not path.is_dir():
        raise UserError(f"dataset path {path} is not a folder: expected {path}/train/<class>/<images>")
    root = path.resolve()
    if not (root / "train").is_dir():
        raise UserError(
            f"{path} has no train/ folder: expected {path}/train/<class>/<images> "
            f"and {path}/val/ or {path}/test/"
        )
    present = [s for s in EVAL_SPLITS if (root / s).is_dir()]
    if not present:
        raise UserError(
            f"{path} has train/ but neither val/ nor test/: add one with the same class folders as train/"
        )
    classes = _class_dirs(root / "train")
    if not classes:
        raise UserError(f"{path}/train has no class folders: expected {path}/train/<class>/<images>")
    splits = {}
    for name in ("train", *present):
        found = _class_dirs(root / name)
        if found != classes:
            missing = sorted(set(classes) - set(found)) or ["none"]
            extra = sorted(set(found) - set(classes)) or ["none"]
            raise UserError(
                f"{path}/{name} must have the same class folders as {path}/train: "
                f"missing {', '.join(missing[:5])}; extra {', '.join(extra[:5])}"
            )
        split = splits[name] = FolderSplit()
        for label, cls in enumerate(classes):
            files = _image_files(root, f"{name}/{cls}", stats)
            if not files:
                raise UserError(
                    f"class folder {path}/{name}/{cls} has no images "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))}): add images or remove the folder"
                )
            split.files += [f for f, _ in files]
            split.stats += [s for _, s in files]
            split.labels += [label] * len(files)
    return FolderLayout(root, classes, splits)


def decode_rgb(path: str) -> np.ndarray:
    """One image file as RGB uint8 (3, H, W): torchvision for JPEG/GIF/WebP, Pillow for the rest.

    A corrupt file raises the decoder's exception (Pillow's message, which names the problem). PNGs
    go to Pillow: torchvision's PNG decoder (0.29) kills the process (SIGSEGV) on some damaged PNGs,
    e.g. one whose image data is shorter than its header says.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError("the file is empty")
    if not data.startswith(PNG_SIGNATURE):
        try:
            tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_image(tensor, ImageReadMode.RGB).numpy()
        except RuntimeError:
            pass  # formats torchvision cannot read, or a damaged file: Pillow decides and explains
    with Image.open(path) as img:  # by name, so that its errors name the file
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1)


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line error messages about a file."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _decode_chunk(paths: list[str]) -> tuple[dict[tuple[int, ...], tuple[list[int], np.ndarray]], list]:
    """Decode ``paths``: ({shape: (indices, stacked images)}, [(index, reason) of unreadable files])."""
    groups: dict[tuple[int, ...], tuple[list[int], list[np.ndarray]]] = {}
    bad = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision")
        for i, path in enumerate(paths):
            try:
                image = decode_rgb(path)
            except Exception as exc:  # any decoder failure means this one file is unreadable
                bad.append((i, describe(exc)))
                continue
            indices, images = groups.setdefault(image.shape, ([], []))
            indices.append(i)
            images.append(image)
    return {shape: (idx, np.stack(imgs)) for shape, (idx, imgs) in groups.items()}, bad


def _executor(workers: int, tasks: int) -> Executor | None:
    if workers < 2 or tasks < 2:
        return None
    # fork starts workers in milliseconds (spawn would re-import torch in each); fall back elsewhere.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(min(workers, tasks), mp_context=context)


def decode_files(
    paths: list[str], *, skip_bad_images: bool, workers: int | None = None
) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Decode ``paths`` into one uint8 (N, 3, H, W) tensor of the readable ones.

    Returns (images, indices of the decoded files, [(path, reason) skipped]). An unreadable file is
    a :class:`UserError` unless ``skip_bad_images``; two image sizes are always one.
    """
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    executor = _executor(workers, len(chunks))
    results = executor.map(_decode_chunk, chunks) if executor else map(_decode_chunk, chunks)
    out: torch.Tensor | None = None
    first: tuple[tuple[int, ...], str] | None = None
    keep = torch.ones(len(paths), dtype=torch.bool)
    skipped = []
    try:
        for start, (groups, bad) in zip(range(0, len(paths), CHUNK), results, strict=True):
            for i, reason in bad:
                if not skip_bad_images:
                    raise _bad_image(paths[start + i], reason)
                skipped.append((paths[start + i], reason))
                keep[start + i] = False
            for shape, (indices, images) in groups.items():
                if first is None:
                    first = (shape, paths[start + indices[0]])
                    out = torch.empty((len(paths), *shape), dtype=torch.uint8)
                if shape != first[0]:
                    raise UserError(_mixed_sizes(first, (shape, paths[start + indices[0]])))
                out[torch.tensor(indices) + start] = torch.from_numpy(images)
    finally:
        if executor:
            executor.shutdown(cancel_futures=True)
    if out is None:
        raise UserError(f"none of the {len(paths)} images could be decoded (first: {skipped[0][0]})")
    kept = keep.nonzero().flatten()
    return (out if len(kept) == len(paths) else out[kept]), kept.tolist(), skipped


def _bad_image(path: str, reason: str) -> UserError:
    # `train` has no --skip-bad-images: point at the one command that has it.
    return UserError(
        f"cannot decode image {path} ({reason}): replace or delete it "
        "(`resnetlab data info --skip-bad-images` lists every unreadable image)"
    )


def _mixed_sizes(a: tuple[tuple[int, ...], str], b: tuple[tuple[int, ...], str]) -> str:
    def size(shape: tuple[int, ...]) -> str:
        return f"{shape[2]}x{shape[1]}"

    return (
        f"images differ in size: {size(a[0])} ({a[1]}) and {size(b[0])} ({b[1]}); folder:PATH needs one "
        "size for all images: resize them, or use imagenet:PATH to stream large images with crops"
    )


def _cache_file(directory: Path, layout: FolderLayout) -> Path:
    """``<name>-<path hash>-<content hash>.pt``: the content hash covers every file's path, size and mtime."""
    digest = hashlib.sha256(f"format {CACHE_FORMAT}\n{layout.root}\n".encode())
    for split in layout.splits.values():  # relative paths start with the split's name
        lines = (
            f"{rel}\t{size}\t{mtime}\n" for rel, (size, mtime) in zip(split.files, split.stats, strict=True)
        )
        digest.update("".join(lines).encode())
    path_key = hashlib.sha256(str(layout.root).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", layout.root.name) or "folder"
    return directory / "folders" / f"{name}-{path_key}-{digest.hexdigest()[:16]}.pt"


def _decode_layout(layout: FolderLayout, skip_bad_images: bool, workers: int | None) -> dict[str, Any]:
    """Decode every split in one pass (one worker pool; sizes checked across splits)."""
    names = list(layout.splits)
    paths = [str(layout.root / f) for n in names for f in layout.splits[n].files]
    labels = torch.tensor([y for n in names for y in layout.splits[n].labels], dtype=torch.int64)
    bounds = np.cumsum([0] + [len(layout.splits[n].files) for n in names])
    images, kept, skipped = decode_files(paths, skip_bad_images=skip_bad_images, workers=workers)
    kept_t = torch.tensor(kept, dtype=torch.int64)
    out: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "root": str(layout.root),
        "classes": layout.classes,
        "skipped": [[os.path.relpath(p, layout.root), reason] for p, reason in skipped],
    }
    for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True):
        rows = ((kept_t >= lo) & (kept_t < hi)).nonzero().flatten()
        if len(rows) == 0:
            raise UserError(f"no image of {layout.root}/{name} could be decoded")
        out[f"{name}_images"] = images[rows]
        out[f"{name}_labels"] = labels[kept_t[rows]]
    return out


def _remove_stale(current: Path) -> None:
    """Delete older caches of the same folder (same name and path hash, other contents)."""
    prefix = current.name.rsplit("-", 1)[0] + "-"
    for old in current.parent.glob(f"{prefix}*.pt"):
        if old != current:
            with contextlib.suppress(OSError):  # in use elsewhere or not ours: harmless to keep
                old.unlink()


def load_folder(
    path: Path,
    cache_dir: str | Path | None = None,
    skip_bad_images: bool = False,
    *,
    workers: int | None = None,
) -> DatasetSplits:
    """Load ``folder:PATH``: decode on first use (``workers`` processes), then from the cache.

    ``cache_dir`` is the cache root (``--data-dir``); the cache file lives in its ``folders/``.
    """
    layout = scan_image_folder(Path(path))
    cache_file = _cache_file(cache_root(cache_dir), layout)
    cached = load_tensors(cache_file)
    if cached is None or cached.get("format") != CACHE_FORMAT:
        cached = _decode_layout(layout, skip_bad_images, workers)
        if save_tensors(cache_file, cached):
            _remove_stale(cache_file)
        else:
            cache_file = None
    skipped = cached["skipped"]
    if skipped and not skip_bad_images:
        raise _bad_image(str(layout.root / skipped[0][0]), skipped[0][1])
    if skipped:
        listed = ", ".join(str(layout.root / rel) for rel, _ in skipped[:LIST_SKIPPED])
        more = f" and {len(skipped) - LIST_SKIPPED} more" if len(skipped) > LIST_SKIPPED else ""
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {listed}{more}", stacklevel=2)
    splits = {n: ImageSet(cached[f"{n}_images"], cached[f"{n}_labels"]) for n in layout.splits}
    return DatasetSplits(
        f"folder:{path}",
        list(cached["classes"]),
        train=splits["train"],
        val=splits.get("val"),
        test=splits.get("test"),
        cache_path=cache_file,
    )
