"""The official CIFAR archives: download from a real HTTP server on 127.0.0.1, verify, parse, cache.

The archives are built here in the official format (Python-2-style pickles with bytes keys, uint8
(N, 3072) rows, a tar.gz with the official folder name), a few images per batch file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from http_server import serving, unused_port
from resnetlab.cli import main
from resnetlab.data import cifar
from resnetlab.data.cache import cache_root
from resnetlab.data.datasets import load_dataset
from resnetlab.errors import UserError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch(rng: np.random.Generator, n: int, label_key: bytes, classes: int) -> tuple[dict, np.ndarray]:
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, classes, n).tolist()
    return {b"batch_label": b"test batch", label_key: labels, b"data": data}, data


def _py2_style(blob: bytes) -> bytes:
    # The official pickles were written by numpy 1 on Python 2 and name numpy.core, not numpy._core.
    return blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def build_archive(kind: str = "cifar10", n: int = 3, seed: int = 0) -> tuple[bytes, dict]:
    """(tar.gz bytes, expected {"members", "train_images", "train_labels", ...}) in the official layout."""
    info = cifar.CIFAR[kind]
    rng = np.random.default_rng(seed)
    classes = CIFAR10_NAMES if kind == "cifar10" else [f"fine{i}" for i in range(100)]
    members, expected = {}, {}
    for split, names in (("train", info.train), ("test", info.test)):
        images, labels = [], []
        for name in names:
            obj, data = _batch(rng, n, info.label_key.encode(), len(classes))
            members[name] = _py2_style(pickle.dumps(obj, protocol=2))
            images.append(data.reshape(-1, 3, 32, 32))
            labels += obj[info.label_key.encode()]
        expected[f"{split}_images"] = torch.from_numpy(np.concatenate(images))
        expected[f"{split}_labels"] = torch.tensor(labels)
    meta = {info.names_key.encode(): [c.encode() for c in classes], b"num_vis": 3072}
    members[info.meta] = pickle.dumps(meta, protocol=2)
    expected["classes"] = classes
    expected["members"] = members
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            entry = tarfile.TarInfo(f"{info.folder}/{name}")
            entry.size = len(blob)
            tar.addfile(entry, io.BytesIO(blob))
    return buf.getvalue(), expected


@pytest.fixture(scope="module")
def archive() -> tuple[bytes, dict]:
    return build_archive()


def _expect_md5(monkeypatch: pytest.MonkeyPatch, kind: str, blob: bytes) -> None:
    """Make ``blob`` the 'published' archive for ``kind``."""
    info = dataclasses.replace(cifar.CIFAR[kind], md5=hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(cifar.CIFAR, kind, info)


def expect_files(monkeypatch: pytest.MonkeyPatch, kind: str, members: dict[str, bytes]) -> None:
    """Make ``members`` (file name -> bytes) the 'published' files of ``kind``'s extracted folder."""
    table = {name: hashlib.md5(blob).hexdigest() for name, blob in members.items()}
    monkeypatch.setitem(cifar.CIFAR, kind, dataclasses.replace(cifar.CIFAR[kind], files=table))


@pytest.fixture
def server():
    with serving() as (httpd, url):
        yield httpd, url + "/kriz/"


def _assert_matches(data, expected: dict) -> None:
    assert data.classes == expected["classes"]
    for split in ("train", "test"):
        part = getattr(data, split)
        assert part.images.dtype == torch.uint8 and part.images.shape[1:] == (3, 32, 32)
        assert torch.equal(part.images, expected[f"{split}_images"])
        assert torch.equal(part.labels, expected[f"{split}_labels"])
        assert part.labels.dtype == torch.int64


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_verify_parse_and_cache(server, archive, monkeypatch, tmp_path):
    httpd, url = server
    blob, expected = archive
    httpd.routes["/kriz/cifar-10-python.tar.gz"] = (blob, "ok")
    _expect_md5(monkeypatch, "cifar10", blob)
    data = cifar.load_cifar("cifar10", tmp_path, base_url=url)
    _assert_matches(data, expected)
    assert data.train.images.shape[0] == 5 * 3 and data.test.images.shape[0] == 3
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == blob
    assert data.cache_path == tmp_path / "cifar10-uint8.pt" and data.cache_path.is_file()
    assert _leftovers(tmp_path) == ["cifar-10-python.tar.gz", "cifar10-uint8.pt"]
    # The second load comes from the decoded cache: no request, and no archive needed.
    (tmp_path / "cifar-10-python.tar.gz").unlink()
    again = cifar.load_cifar("cifar10", tmp_path, base_url=url)
    _assert_matches(again, expected)
    assert len(httpd.requests) == 1


def test_url_and_data_dir_from_environment(server, archive, monkeypatch, tmp_path):
    httpd, url = server
    blob, expected = archive
    httpd.routes["/kriz/cifar-10-python.tar.gz"] = (blob, "ok")
    _expect_md5(monkeypatch, "cifar10", blob)
    monkeypatch.setenv("RESNETLAB_CIFAR_URL", url)
    monkeypatch.setenv("RESNETLAB_DATA_DIR", str(tmp_path / "env-cache"))
    _assert_matches(load_dataset("cifar10"), expected)
    assert (tmp_path / "env-cache" / "cifar10-uint8.pt").is_file()


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("RESNETLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "resnetlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "resnetlab"
    monkeypatch.setenv("RESNETLAB_DATA_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"


@pytest.mark.parametrize("mode", ["truncated-body", "wrong-checksum", "cut", "stall"])
def test_bad_downloads_leave_nothing(server, archive, monkeypatch, tmp_path, mode):
    httpd, url = server
    blob, _ = archive
    _expect_md5(monkeypatch, "cifar10", blob)
    if mode == "stall":  # the stall outlasts any timeout; this one only has to cover the response headers
        monkeypatch.setattr(cifar, "TIMEOUT_S", 2.0)
    if mode == "truncated-body":  # a complete transfer of a truncated file: caught by the checksum
        httpd.routes["/kriz/cifar-10-python.tar.gz"] = (blob[: len(blob) // 2], "ok")
    elif mode == "wrong-checksum":
        monkeypatch.setitem(cifar.CIFAR, "cifar10", dataclasses.replace(cifar.CIFAR["cifar10"], md5="0" * 32))
        httpd.routes["/kriz/cifar-10-python.tar.gz"] = (blob, "ok")
    else:  # the server announces the full length and hangs up or aborts half way
        httpd.routes["/kriz/cifar-10-python.tar.gz"] = (blob, mode)
    with pytest.raises(UserError) as err:
        cifar.load_cifar("cifar10", tmp_path, base_url=url)
    message = str(err.value)
    assert "\n" not in message and url + "cifar-10-python.tar.gz" in message
    expected = {"cut": "stopped after", "stall": "interrupted after"}.get(mode, "MD5")
    assert expected in message
    assert "nothing was saved" in message
    assert _leftovers(tmp_path) == []


def test_truncated_archive_with_matching_checksum_is_a_clear_error(server, archive, monkeypatch, tmp_path):
    httpd, url = server
    blob, _ = archive
    truncated = blob[: len(blob) * 2 // 3]
    httpd.routes["/kriz/cifar-10-python.tar.gz"] = (truncated, "ok")
    _expect_md5(monkeypatch, "cifar10", truncated)
    with pytest.raises(
        UserError, match=r"cifar-10-python\.tar\.gz is not a readable tar\.gz archive.*delete"
    ):
        cifar.load_cifar("cifar10", tmp_path, base_url=url)
    assert not (tmp_path / "cifar10-uint8.pt").exists()


def test_unreachable_server_is_one_paragraph_with_the_fix(tmp_path):
    port = unused_port()
    with pytest.raises(UserError) as err:
        cifar.load_cifar("cifar10", tmp_path / "cache", base_url=f"http://127.0.0.1:{port}/")
    message = str(err.value)
    assert "\n" not in message
    assert f"could not reach http://127.0.0.1:{port}/cifar-10-python.tar.gz" in message
    assert "--data-dir" in message and "cifar-10-batches-py" in message
    assert _leftovers(tmp_path / "cache") == []


def test_http_error_is_reported(server, tmp_path):
    _, url = server
    with pytest.raises(UserError, match="HTTP 404"):
        cifar.load_cifar("cifar10", tmp_path, base_url=url)
    assert _leftovers(tmp_path) == []


def test_local_archive_and_extracted_folder(archive, monkeypatch, tmp_path):
    blob, expected = archive
    _expect_md5(monkeypatch, "cifar10", blob)
    expect_files(monkeypatch, "cifar10", expected["members"])
    (tmp_path / "with-archive").mkdir()
    (tmp_path / "with-archive" / "cifar-10-python.tar.gz").write_bytes(blob)
    _assert_matches(cifar.load_cifar("cifar10", tmp_path / "with-archive", download=False), expected)
    extracted = tmp_path / "with-folder" / "cifar-10-batches-py"
    extracted.mkdir(parents=True)
    for name, member in expected["members"].items():
        (extracted / name).write_bytes(member)
    _assert_matches(cifar.load_cifar("cifar10", tmp_path / "with-folder", download=False), expected)
    # --data-dir may also name the extracted folder itself, but not the archive file.
    _assert_matches(cifar.load_cifar("cifar10", extracted, download=False), expected)
    with pytest.raises(UserError, match="is a file: pass --data-dir with the folder"):
        cifar.load_cifar("cifar10", tmp_path / "with-archive" / "cifar-10-python.tar.gz")


def test_corrupt_local_archive_names_the_file(archive, monkeypatch, tmp_path):
    blob, _ = archive
    _expect_md5(monkeypatch, "cifar10", blob)
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(blob[:-100])
    with pytest.raises(UserError, match=rf"{bad} is corrupt.*delete it"):
        cifar.load_cifar("cifar10", tmp_path, download=False)


@pytest.mark.parametrize(
    ("member", "payload", "match"),
    [
        ("data_batch_3", b"\x80\x02not a pickle", "not a readable CIFAR pickle"),
        (
            "test_batch",
            pickle.dumps(OrderedDict(a=1), protocol=2),
            "unexpected object collections.OrderedDict",
        ),
        (
            "data_batch_1",
            pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}),
            "not uint8",
        ),
        ("batches.meta", pickle.dumps({b"num_vis": 3072}), "no 'label_names' entry"),
    ],
)
def test_bad_pickles_name_the_file(archive, monkeypatch, tmp_path, member, payload, match):
    # The bad pickle is made the 'published' file: the parser must still refuse it (defence in depth
    # behind the MD5 check, which tests/test_cifar_folder_md5.py covers).
    _, expected = archive
    members = {name: payload if name == member else blob for name, blob in expected["members"].items()}
    expect_files(monkeypatch, "cifar10", members)
    for name, blob in members.items():
        (tmp_path / name).write_bytes(blob)
    with pytest.raises(UserError, match=match) as err:
        cifar.load_cifar("cifar10", tmp_path, download=False)
    assert str(tmp_path / member) in str(err.value)
    assert not (tmp_path / "cifar10-uint8.pt").exists()


def test_cifar100_uses_fine_labels(monkeypatch, tmp_path):
    blob, expected = build_archive("cifar100", n=4, seed=1)
    _expect_md5(monkeypatch, "cifar100", blob)
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(blob)
    data = cifar.load_cifar("cifar100", tmp_path, download=False)
    _assert_matches(data, expected)
    assert len(data.classes) == 100


def test_missing_without_download_and_damaged_cache(archive, monkeypatch, tmp_path):
    with pytest.raises(UserError, match=r"not found in .*--data-dir"):
        cifar.load_cifar("cifar10", tmp_path, download=False)
    blob, expected = archive
    _expect_md5(monkeypatch, "cifar10", blob)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(blob)
    (tmp_path / "cifar10-uint8.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        _assert_matches(cifar.load_cifar("cifar10", tmp_path, download=False), expected)
    _assert_matches(cifar.load_cifar("cifar10", tmp_path, download=False), expected)  # rebuilt


def test_cli_info_with_a_local_archive(archive, monkeypatch, tmp_path, capsys):
    blob, _ = archive
    _expect_md5(monkeypatch, "cifar10", blob)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(blob)
    argv = ["data", "info", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--no-download"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train    15 images" in out and "test     3 images" in out and "airplane" in out
    assert main(["data", "info", "--dataset", "cifar100", "--data-dir", str(tmp_path), "--no-download"]) == 2
    assert "cifar-100-python.tar.gz not found" in capsys.readouterr().err
