"""The official CIFAR-10 / CIFAR-100 "python version" archives: download, verify, parse, cache.

Lookup order under the cache root (see :func:`resnetlab.data.cache.cache_root`): the decoded cache
``<kind>-uint8.pt`` (loads in well under a second), the archive, the extracted folder
(``cifar-10-batches-py`` / ``cifar-100-python``, or the root itself when it is that folder), and
finally a download from :data:`BASE_URL`. Downloads stream into a temporary file that is renamed only
after the size and the published MD5 both check out, so nothing partial is ever kept.

Whatever the source, its bytes are checked against the published MD5s before they are decoded: the
archive's MD5, or each extracted file's. The check is made once per decoded cache: the cache records
the MD5s it was verified against and each source file's size and modification time, and is trusted
only while those MD5s are still the published ones and each source file is unchanged (or gone).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch

from resnetlab.data.cache import (
    ENV_CACHE,
    ENV_DATA_DIR,
    cache_root,
    ensure_dir,
    load_tensors,
    own_cache_dir,
    save_tensors,
    writable_dir,
)
from resnetlab.data.loader import ImageSet
from resnetlab.data.splits import DatasetSplits
from resnetlab.download import download_file, file_digest
from resnetlab.errors import UserError

BASE_URL = "https://www.cs.toronto.edu/~kriz/"
ENV_URL = "RESNETLAB_CIFAR_URL"  # overrides BASE_URL, e.g. a mirror or a test server
CACHE_FORMAT = 2  # 2: the cache records what it was verified against; older caches are rebuilt
TIMEOUT_S = 60.0  # seconds without a byte from the server before a download counts as interrupted


@dataclass(frozen=True)
class CifarArchive:
    """What one official archive holds and how its pickles name things."""

    archive: str
    md5: str  # published on https://www.cs.toronto.edu/~kriz/cifar.html
    folder: str  # the top-level folder inside the archive
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    title: str = "CIFAR"  # how messages name the data set
    # The published MD5 of each file of the extracted folder (train, test and meta); tests that build
    # small fake folders give a CifarArchive whose table matches their files.
    files: Mapping[str, str] = field(default_factory=dict)

    def published(self) -> dict[str, str]:
        """File name (the archive's, or one of the extracted folder's) -> its published MD5."""
        return {self.archive: self.md5, **self.files}


CIFAR = {
    "cifar10": CifarArchive(
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        title="CIFAR-10",
        files=MappingProxyType(
            {
                "data_batch_1": "c99cafc152244af753f735de768cd75f",
                "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                "test_batch": "40351d587109b95175f43aff81a1287e",
                "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
            }
        ),
    ),
    "cifar100": CifarArchive(
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",  # the 100 fine classes; the 20 coarse superclasses are not used
        "fine_label_names",
        title="CIFAR-100",
        files=MappingProxyType(
            {
                "train": "16019d7e3df5f24257cddd939b257f8d",
                "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                "meta": "7973b15100ade9c7d40fb424638fde48",
            }
        ),
    ),
}


def load_cifar(
    kind: str, data_dir: str | Path | None = None, *, download: bool = True, base_url: str | None = None
) -> DatasetSplits:
    """CIFAR-10 or CIFAR-100 (``kind``) as uint8 (N, 3, 32, 32) images and int64 labels.

    ``data_dir`` is the cache root, or a folder holding the archive or the extracted folder. With
    ``download=False`` a missing archive is a :class:`UserError` instead of a download. A source file
    whose MD5 is not the published one is a :class:`UserError` naming it, and nothing is cached.

    Where the decoded cache goes: ``<data_dir>/<kind>-uint8.pt`` when that directory is writable;
    when it is read-only (a shared copy, a read-only mount, or permission bits that deny writing,
    which root honours here too), resnetlab's own cache, ``$RESNETLAB_CACHE/cifar/`` (else
    ``$XDG_CACHE_HOME/resnetlab/cifar/`` or ``~/.cache/resnetlab/cifar/``), in a file named after the
    data directory's path; when that cannot be written either, nowhere: a warning says so and each
    run verifies and decodes again. Nothing is ever written into a read-only data directory.
    """
    info = CIFAR[kind]
    root = cache_root(data_dir)
    cache_file = root / f"{kind}-uint8.pt"
    cached = _trusted(load_tensors(cache_file), kind, info, root)
    if cached is None:
        source = _find_source(root, info)
        if source is None:
            if not download:
                raise UserError(
                    f"{info.archive} not found in {root}: pass --data-dir DIR where DIR holds it or its "
                    f"extracted {info.folder} folder, or allow the download"
                )
            ensure_dir(root)
            url = (base_url or os.environ.get(ENV_URL) or BASE_URL).rstrip("/") + "/" + info.archive
            fix = (
                f"download {info.archive} on a machine with internet access and pass --data-dir DIR, where "
                f"DIR holds it or its extracted {info.folder} folder (or set {ENV_DATA_DIR}=DIR, or set "
                f"{ENV_URL} to a mirror)"
            )
            source = download_file(
                url, root / info.archive, info.md5, algorithm="md5", fix=fix, timeout=TIMEOUT_S
            )
        if not writable_dir(root):
            cache_file = _own_cache_file(kind, root)
            cached = _trusted(load_tensors(cache_file), kind, info, root)
        if cached is None:
            cached = {"format": CACHE_FORMAT, "kind": kind, **_parse(source, info, root)}
            if not _save_cache(cache_file, cached):
                cache_file = None
    return DatasetSplits(
        kind,
        list(cached["classes"]),
        train=ImageSet(cached["train_images"], cached["train_labels"]),
        test=ImageSet(cached["test_images"], cached["test_labels"]),
        cache_path=cache_file,
    )


def _own_cache_file(kind: str, root: Path) -> Path:
    """Where the decoded cache of a read-only data directory ``root`` goes: one file per directory, so
    that two copies of the data never share a cache (each copy's files are checked)."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return own_cache_dir() / "cifar" / f"{kind}-{key}-uint8.pt"


def _save_cache(path: Path, cached: dict[str, Any]) -> bool:
    """Write the decoded cache unless its directory is read-only; False (with a warning) if not written."""
    if not writable_dir(path.parent):
        warnings.warn(
            f"could not write the decoded cache {path} (the directory is read-only; set {ENV_CACHE} to a "
            "writable directory); the next run will verify and decode again",
            stacklevel=3,
        )
        return False
    return save_tensors(path, cached)


def _trusted(cached: dict[str, Any] | None, kind: str, info: CifarArchive, root: Path) -> dict | None:
    """``cached`` if it may be used without checking the source again, else None (it is rebuilt).

    It must be of this format and kind, have been verified against MD5s that are still the published
    ones, and its source files under ``root`` must be unchanged since (same size and modification
    time) or gone: a cache outlives a deleted archive, but not a replaced or edited batch file.
    """
    if cached is None or cached.get("format") != CACHE_FORMAT or cached.get("kind") != kind:
        return None
    verified, published = cached.get("verified"), info.published()
    if not verified or any(published.get(Path(rel).name) != md5 for rel, md5 in verified.items()):
        return None
    for rel, (size, mtime_ns) in cached.get("stats", {}).items():
        try:
            st = (root / rel).stat()
        except FileNotFoundError:
            continue
        except OSError:  # there but unreadable: cannot tell whether it changed
            return None
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            return None
    return cached


def _find_source(root: Path, info: CifarArchive) -> Path | None:
    """The archive or extracted folder under ``root``, preferring the archive (its MD5 is checked)."""
    if root.is_file():
        raise UserError(f"the data directory {root} is a file: pass --data-dir with the folder that holds it")
    if (root / info.archive).is_file():
        return root / info.archive
    for candidate in (root / info.folder, root):
        if (candidate / info.meta).is_file():
            return candidate
    return None


def _parse(source: Path, info: CifarArchive, root: Path) -> dict[str, Any]:
    """Tensors and class names from the archive or the extracted folder at ``source`` (under ``root``),
    each file checked against its published MD5 first, and the record of that check for the cache."""
    needed = (*info.train, *info.test, info.meta)
    if source.is_file():
        checked = [source]
    else:
        missing = [n for n in needed if not (source / n).is_file()]
        if missing:
            raise UserError(
                f"{source} lacks {', '.join(missing)}: it is not a complete {info.folder} folder; "
                f"pass --data-dir DIR with the archive {info.archive} or a complete extracted copy"
            )
        checked = [source / n for n in needed]
    # Stat before reading: a file changed while it is read then fails the cache's check next time.
    stats = {path.relative_to(root).as_posix(): _size_and_mtime(path) for path in checked}
    if source.is_file():
        got = file_digest(source, "md5")
        if got != info.md5:
            raise UserError(
                f"{source} is corrupt or not the official {info.archive} (MD5 {got}, expected {info.md5}): "
                "delete it to download it again, or pass --data-dir DIR with a good copy"
            )
        blobs = _read_archive(source, info, needed)
        where = {n: f"{source}:{info.folder}/{n}" for n in needed}
    else:
        blobs = _read_verified(source, info, needed)
        where = {n: str(source / n) for n in needed}
    meta = _unpickle(blobs[info.meta], where[info.meta])
    classes = [
        c.decode() if isinstance(c, bytes) else str(c) for c in _field(meta, info.names_key, where[info.meta])
    ]
    out: dict[str, Any] = {"classes": classes}
    for split, names in (("train", info.train), ("test", info.test)):
        parts = [_batch(_unpickle(blobs[n], where[n]), info, len(classes), where[n]) for n in names]
        out[f"{split}_images"] = torch.cat([p[0] for p in parts])
        out[f"{split}_labels"] = torch.cat([p[1] for p in parts])
    published = info.published()
    out["verified"] = {rel: published[Path(rel).name] for rel in stats}
    out["stats"] = stats
    return out


def _size_and_mtime(path: Path) -> list[int]:
    """[size, mtime in ns]: what tells a later run that a verified file may have changed."""
    try:
        st = path.stat()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})") from None
    return [st.st_size, st.st_mtime_ns]


def _read_verified(folder: Path, info: CifarArchive, needed: tuple[str, ...]) -> dict[str, bytes]:
    """The bytes of each needed file of an extracted folder, after all of them matched their MD5s.

    Every file is hashed before any is unpickled: a damaged or substituted file is reported as such,
    not as whatever its bytes happen to make the parser say, and all bad files are named at once.
    """
    blobs: dict[str, bytes] = {}
    bad: list[tuple[str, str]] = []
    for name in needed:
        try:
            blobs[name] = (folder / name).read_bytes()
        except OSError as exc:
            raise UserError(
                f"cannot read {folder / name} ({exc.strerror or exc}): "
                "pass --data-dir DIR with a readable copy"
            ) from None
        got = hashlib.md5(blobs[name], usedforsecurity=False).hexdigest()
        if got != info.files[name]:
            bad.append((name, got))
    if bad:
        name, got = bad[0]
        others = f" (also bad: {', '.join(n for n, _ in bad[1:])})" if len(bad) > 1 else ""
        raise UserError(
            f"{folder / name} is corrupt or not the official {info.title} file (MD5 {got}, expected "
            f"{info.files[name]}){others}: extract {info.folder} again from the official {info.archive}, "
            "or pass --data-dir DIR with the archive or a good copy"
        )
    return blobs


def _read_archive(path: Path, info: CifarArchive, needed: tuple[str, ...]) -> dict[str, bytes]:
    """The needed members' bytes, read in one sequential pass (gzip cannot seek backwards cheaply)."""
    wanted = {f"{info.folder}/{n}": n for n in needed}
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    blobs[wanted[member.name]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(
            f"{path} is not a readable tar.gz archive ({exc}): delete it to download it again, "
            "or pass --data-dir DIR with a good copy"
        ) from None
    missing = [n for n in needed if n not in blobs]
    if missing:
        raise UserError(
            f"{path} lacks {info.folder}/{missing[0]}: it is not the official {info.archive}; "
            "delete it to download it again, or pass --data-dir DIR with a good copy"
        )
    return blobs


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers, bytes and numpy arrays: the archive's pickles need nothing else."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        *(
            (m, n)
            for m in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray")
            for n in ("ndarray", "dtype", "_reconstruct", "scalar")
        ),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _unpickle(blob: bytes, where: str) -> dict:
    try:
        # The official pickles come from Python 2: "bytes" keeps their str keys and values as bytes.
        obj = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # any failure of a foreign pickle is bad input, not a bug of ours
        raise UserError(
            f"{where} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); delete the file or "
            "archive to download it again, or pass --data-dir DIR with a good copy"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} holds a {type(obj).__name__}, not the dict of a CIFAR batch")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        raise UserError(f"{where} has no {key!r} entry: it is not an official CIFAR file")
    return obj[key]


def _batch(obj: dict, info: CifarArchive, num_classes: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (N, 3, 32, 32), int64 (N,)) from one batch dict; rows are 1024 R, 1024 G, 1024 B values."""
    data = np.asarray(_field(obj, "data", where))
    labels = np.asarray(_field(obj, info.label_key, where), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{where} holds {data.dtype} data of shape {data.shape}, not uint8 (N, 3072)")
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise UserError(
            f"{where} has labels that do not match its {data.shape[0]} images and {num_classes} classes"
        )
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)
