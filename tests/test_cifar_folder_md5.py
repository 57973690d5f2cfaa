"""The extracted CIFAR folders are trusted only after each file matched its published MD5.

Small fake folders (built like tests/test_data_cifar.py's archives) cannot have the official MD5s, so
those tests give cifar.CIFAR a CifarArchive whose ``files`` table is their own files' MD5s. The tests
at the end read the real official CIFAR-10 in ../shared/data/cifar10 and skip when it is absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from fault_cases import as_ordinary_user
from resnetlab.data import cifar
from resnetlab.data.cache import writable_dir
from resnetlab.errors import UserError
from test_data_cifar import CIFAR10_NAMES, build_archive, expect_files

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
REAL_FOLDER = REAL / "cifar-10-batches-py"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fake_folder(root: Path, kind: str = "cifar10", seed: int = 0) -> tuple[Path, dict]:
    """ROOT/<official folder name> with a few images per file; (its path, build_archive's expectations)."""
    _, expected = build_archive(kind, n=3, seed=seed)
    folder = root / cifar.CIFAR[kind].folder
    folder.mkdir(parents=True)
    for name, blob in expected["members"].items():
        (folder / name).write_bytes(blob)
    return folder, expected


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: what 'nothing was written there' compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def flip_byte(path: Path, offset: int) -> None:
    """Change one byte of ``path`` in place and move its mtime on, as any later edit would."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The extracted folders whose files were read and hashed, one entry per check."""
    seen: list[Path] = []
    real = cifar._read_verified

    def counting(folder: Path, *args):
        seen.append(folder)
        return real(folder, *args)

    monkeypatch.setattr(cifar, "_read_verified", counting)
    return seen


@pytest.fixture
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """resnetlab's own cache ($RESNETLAB_CACHE), where decoded copies of read-only data go."""
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "own-cache"))
    return tmp_path / "own-cache"


def assert_matches(data, expected: dict) -> None:
    assert data.classes == expected["classes"]
    for split in ("train", "test"):
        assert torch.equal(getattr(data, split).images, expected[f"{split}_images"])
        assert torch.equal(getattr(data, split).labels, expected[f"{split}_labels"])


# ----------------------------------------------------------------------------- small fake folders


def test_folder_is_checked_once_per_cache_and_the_cache_says_so(monkeypatch, tmp_path, checks):
    folder, expected = fake_folder(tmp_path)
    expect_files(monkeypatch, "cifar10", expected["members"])
    data = cifar.load_cifar("cifar10", tmp_path, download=False)
    assert_matches(data, expected)
    assert checks == [folder]
    assert data.cache_path == tmp_path / "cifar10-uint8.pt"
    record = torch.load(data.cache_path, weights_only=True)
    assert record["verified"] == {
        f"cifar-10-batches-py/{name}": md5(blob) for name, blob in expected["members"].items()
    }
    assert_matches(cifar.load_cifar("cifar10", tmp_path, download=False), expected)
    assert checks == [folder], "a good decoded cache was checked again"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], id="one-byte-changed"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_a_damaged_batch_file_is_named_in_one_line(monkeypatch, tmp_path, own_cache, damage):
    folder, expected = fake_folder(tmp_path)
    expect_files(monkeypatch, "cifar10", expected["members"])
    bad = damage(expected["members"]["data_batch_3"])
    (folder / "data_batch_3").write_bytes(bad)
    before = files_under(tmp_path)
    with pytest.raises(UserError) as err:
        cifar.load_cifar("cifar10", tmp_path, download=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"{folder / 'data_batch_3'} is corrupt or not the official CIFAR-10 file (MD5 {md5(bad)}, expected "
        f"{md5(expected['members']['data_batch_3'])}): extract cifar-10-batches-py again"
    )
    assert "also bad" not in message
    assert files_under(tmp_path) == before, "something was written beside bad data"
    assert not own_cache.exists()


def test_every_bad_file_is_named_in_the_same_line(monkeypatch, tmp_path):
    folder, expected = fake_folder(tmp_path)
    expect_files(monkeypatch, "cifar10", expected["members"])
    for name in ("test_batch", "data_batch_3"):
        flip_byte(folder / name, 200)
    with pytest.raises(UserError, match=r"/data_batch_3 is corrupt .*\(also bad: test_batch\)"):
        cifar.load_cifar("cifar10", tmp_path, download=False)


def test_a_missing_batch_file_is_named(monkeypatch, tmp_path):
    folder, expected = fake_folder(tmp_path)
    expect_files(monkeypatch, "cifar10", expected["members"])
    (folder / "data_batch_5").unlink()
    with pytest.raises(UserError, match="lacks data_batch_5: it is not a complete cifar-10-batches-py"):
        cifar.load_cifar("cifar10", tmp_path, download=False)
    assert not (tmp_path / "cifar10-uint8.pt").exists()


def test_a_file_changed_after_caching_is_checked_again(monkeypatch, tmp_path, checks):
    folder, expected = fake_folder(tmp_path)
    expect_files(monkeypatch, "cifar10", expected["members"])
    cifar.load_cifar("cifar10", tmp_path, download=False)
    flip_byte(folder / "data_batch_3", 300)  # same size: only the mtime tells the cache it is stale
    with pytest.raises(UserError, match=r"/data_batch_3 is corrupt or not the official CIFAR-10 file"):
        cifar.load_cifar("cifar10", tmp_path, download=False)
    assert len(checks) == 2
    # With the folder gone, the verified cache is all that is left of it, and it is used.
    shutil.rmtree(folder)
    assert_matches(cifar.load_cifar("cifar10", tmp_path, download=False), expected)


def test_a_cache_not_verified_against_the_published_md5s_is_not_trusted(monkeypatch, tmp_path, checks):
    official = cifar.CIFAR["cifar10"]
    folder, expected = fake_folder(tmp_path)
    # What earlier versions wrote, from a folder they never checked: no record of a check.
    torch.save(
        {"format": 1, "kind": "cifar10", "classes": ["x"] * 10, "train_images": torch.zeros(1, 3, 32, 32)},
        tmp_path / "cifar10-uint8.pt",
    )
    expect_files(monkeypatch, "cifar10", expected["members"])
    assert_matches(cifar.load_cifar("cifar10", tmp_path, download=False), expected)
    assert checks == [folder]
    # A cache verified against other MD5s (here: the fake ones) is never taken for the official data:
    # under the real table the fake folder is checked again, and fails.
    monkeypatch.setitem(cifar.CIFAR, "cifar10", official)
    with pytest.raises(UserError, match=r"/data_batch_1 is corrupt or not the official CIFAR-10 file"):
        cifar.load_cifar("cifar10", tmp_path, download=False)


def test_cifar100_folder_is_checked_too(monkeypatch, tmp_path):
    folder, expected = fake_folder(tmp_path, "cifar100", seed=1)
    expect_files(monkeypatch, "cifar100", expected["members"])
    data = cifar.load_cifar("cifar100", tmp_path, download=False)
    assert_matches(data, expected)
    assert len(data.classes) == 100
    flip_byte(folder / "train", 500)
    with pytest.raises(UserError) as err:
        cifar.load_cifar("cifar100", tmp_path, download=False)
    message = str(err.value)
    assert message.startswith(f"{folder / 'train'} is corrupt or not the official CIFAR-100 file (MD5 ")
    assert "extract cifar-100-python again from the official cifar-100-python.tar.gz" in message


def test_the_published_tables_are_torchvisions():
    """An independent copy of the published MD5s: a typo in ours would reject every good folder."""
    tv = pytest.importorskip("torchvision.datasets")
    for kind, theirs in (("cifar10", tv.CIFAR10), ("cifar100", tv.CIFAR100)):
        info = cifar.CIFAR[kind]
        published = dict(theirs.train_list + theirs.test_list) | {theirs.meta["filename"]: theirs.meta["md5"]}
        assert dict(info.files) == published
        assert set(info.files) == {*info.train, *info.test, info.meta}
        assert (info.archive, info.md5, info.folder) == (theirs.filename, theirs.tgz_md5, theirs.base_folder)


@contextlib.contextmanager
def shared_tmp() -> Iterator[Path]:
    """A temporary directory that an unprivileged user can enter (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="resnetlab-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for p in (path, *path.rglob("*")):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(path)


# As root, chmod does not stop writes: "nobody" meets a really read-only directory, and root meets
# one that only its permission bits mark read-only, which resnetlab honours for root too.
AS = [pytest.param(contextlib.nullcontext, id="as-this-user"), pytest.param(as_ordinary_user, id="as-nobody")]


@pytest.mark.parametrize("user", AS)
def test_a_read_only_data_dir_is_cached_in_resnetlabs_own_cache(monkeypatch, checks, user):
    with shared_tmp() as tmp:
        folder, expected = fake_folder(tmp / "data")
        expect_files(monkeypatch, "cifar10", expected["members"])
        (tmp / "own").mkdir(mode=0o777)
        (tmp / "own").chmod(0o777)
        monkeypatch.setenv("RESNETLAB_CACHE", str(tmp / "own"))
        for p in (folder, tmp / "data"):
            p.chmod(0o555)
        before = files_under(tmp / "data")
        with user(), warnings.catch_warnings():
            warnings.simplefilter("error")  # a read-only data dir is normal: no warning
            assert not writable_dir(tmp / "data")
            first = cifar.load_cifar("cifar10", tmp / "data", download=False)
            again = cifar.load_cifar("cifar10", tmp / "data", download=False)
        assert_matches(again, expected)
        assert files_under(tmp / "data") == before
        assert first.cache_path == again.cache_path
        assert first.cache_path.parent == tmp / "own" / "cifar" and first.cache_path.is_file()
        assert first.cache_path.name.startswith("cifar10-") and not list(first.cache_path.parent.glob(".*"))
        assert checks == [folder]


@pytest.mark.parametrize("user", AS)
def test_read_only_everywhere_decodes_without_a_cache(monkeypatch, user):
    with shared_tmp() as tmp:
        folder, expected = fake_folder(tmp / "data")
        expect_files(monkeypatch, "cifar10", expected["members"])
        (tmp / "own").mkdir()
        monkeypatch.setenv("RESNETLAB_CACHE", str(tmp / "own"))
        for p in (folder, tmp / "data", tmp / "own"):
            p.chmod(0o555)
        argv = ["data", "info", "--dataset", "cifar10", "--data-dir", str(tmp / "data"), "--no-download"]
        with user():
            code, out, err = run_cli(argv)
        assert code == 0, err
        assert "train    15 images" in out and "cache    none" in out
        assert re.fullmatch(
            f"resnetlab: warning: could not write the decoded cache {tmp}/own/cifar/cifar10-[0-9a-f]{{16}}"
            r"-uint8\.pt \(the directory is read-only; set RESNETLAB_CACHE to a writable directory\); "
            "the next run will verify and decode again\n",
            err,
        ), err
        assert sorted(p.name for p in tmp.rglob("*") if p.is_file()) == sorted(expected["members"])


# ----------------------------------------------------------------------------- the real CIFAR-10


def real_folder() -> Path:
    if not REAL_FOLDER.is_dir():
        pytest.skip(f"the official CIFAR-10 folder {REAL_FOLDER} is absent on this machine")
    if writable_dir(REAL_FOLDER):
        pytest.skip(f"{REAL_FOLDER} is writable here, and this test must not write into the shared data")
    return REAL_FOLDER


def test_the_real_folder_verifies_loads_and_is_cached_elsewhere(own_cache, checks):
    folder = real_folder()  # read-only, as in CI: this is also the read-only data dir test
    before = files_under(REAL)
    # --data-dir naming the extracted folder itself: no decoded cache can be in it (it is read-only).
    data = cifar.load_cifar("cifar10", folder, download=False)
    assert checks == [folder]
    assert data.classes == CIFAR10_NAMES
    assert data.train.images.shape == (50_000, 3, 32, 32) and data.test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(data.train.labels).tolist() == [5000] * 10
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    assert data.cache_path.parent == own_cache / "cifar"
    record = torch.load(data.cache_path, weights_only=True, mmap=True)
    assert record["verified"] == dict(cifar.CIFAR["cifar10"].files)
    again = cifar.load_cifar("cifar10", folder, download=False)
    assert checks == [folder] and again.cache_path == data.cache_path
    assert files_under(REAL) == before


def test_a_real_copy_with_one_byte_changed_fails_in_the_cli(own_cache, tmp_path):
    folder = real_folder()
    copy = tmp_path / "copy" / "cifar-10-batches-py"
    copy.mkdir(parents=True)
    # Links to the untouched files keep this test from copying 180 MB; data_batch_3 is a real copy.
    for source in folder.iterdir():
        if source.name != "data_batch_3":
            (copy / source.name).symlink_to(source)
    shutil.copyfile(folder / "data_batch_3", copy / "data_batch_3")
    flip_byte(copy / "data_batch_3", 10_000_000)
    got = md5((copy / "data_batch_3").read_bytes())
    code, out, err = run_cli(["data", "info", "--dataset", "cifar10", "--data-dir", str(tmp_path / "copy")])
    assert (code, out) == (2, "")
    assert err == (
        f"resnetlab: error: {copy / 'data_batch_3'} is corrupt or not the official CIFAR-10 file (MD5 {got}, "
        "expected 54ebc095f3ab1f0389bbae665268c751): extract cifar-10-batches-py again from the official "
        "cifar-10-python.tar.gz, or pass --data-dir DIR with the archive or a good copy\n"
    )
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["cifar-10-batches-py"]
    assert not own_cache.exists()
