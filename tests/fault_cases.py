"""The cases of the fault table (docs/reliability.md): what each fault is, how it is brought about
and what must happen. tests/test_faults.py runs them and renders the table from them.

A case runs one `resnetlab` command against a workspace W (see ``workspace`` in test_faults.py):
in-process through tests/cli_runner.py, or, where a signal or a file-size rlimit is the fault, as a
real process, with RESNETLAB_TEST_STOP_AT (or a stop inside the checkpoint write) placing the signal,
never a timer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
from cli_runner import run_cli
from resnetlab.data import cifar
from resnetlab.engine import runlock
from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.testhook import STOP_AT
from resnetlab.models import build_model

# The run every training case starts from: 6 iterations of 16 images (4 per epoch), checkpoints at 2, 4, 6.
# --precision fp32: real processes must compute what the in-process runs compute, on any CPU (auto
# would pick bf16 on a CPU with native bf16 there, and conftest makes it fp32 in-process).
RUN = (
    "--model resnet20 --dataset synthetic:64,32,8,4 --batch-size 16 --iterations 6 --checkpoint-every 2 "
    "--log-every 1 --eval-every 3 --deterministic --precision fp32 --quiet"
)
NOBODY = 65534  # the unprivileged user the read-only cases run as when the tests run as root
GUARD_S = 180  # only a hung process meets this: no outcome depends on it


@dataclass(frozen=True)
class Case:
    """One row: a fault, the command that meets it, and what must happen."""

    id: str
    fault: str
    command: str  # resnetlab arguments (W: the workspace, RUN: the run above); a procedure's summary if run
    code: int  # exit code; -N: killed by signal N
    message: str = ""  # all of stderr, one line ("" for nothing): W for the workspace, … for a varying part
    note: str = ""  # what else happens, for the table
    files: str = "unchanged"  # what became of the user's files, for the table
    updates: tuple[str, ...] = ()  # files under W a continuing run rewrites; all others must stay identical
    setup: Callable[[Path], object] | None = None
    run: Callable[[Path], tuple[int, str]] | None = None  # a procedure instead of the in-process command
    check: Callable[[Path], None] | None = None  # more checks, after the files were compared
    unprivileged: bool = False  # as an ordinary user: root writes through read-only permissions


# ----------------------------------------------------------------------------- files the cases use


def write_png(path: Path, mode: str = "RGB", size: tuple[int, int] = (8, 8), seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def image_bytes(mode: str = "RGB", kind: str = "png", size: tuple[int, int] = (8, 8)) -> bytes:
    """An image file's bytes: noise in ``mode`` (e.g. "L", "RGBA", "CMYK", "P"), format ``kind``."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(9).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(buffer, format=kind)
    return buffer.getvalue()


def raw_png(width: int, height: int, pixel_bytes: bytes) -> bytes:
    """An 8-bit RGB PNG whose header says ``width`` x ``height`` and whose image data is ``pixel_bytes``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(pixel_bytes, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def short_png() -> bytes:
    """A PNG with less image data than its 8x8 header promises (torchvision 0.29 segfaults on it)."""
    return raw_png(8, 8, bytes(10))


def half_png() -> bytes:
    """A 32x32 PNG of noise cut in half, as an interrupted copy leaves it."""
    data = image_bytes(size=(32, 32))
    return data[: len(data) // 2]


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_folder(root: Path, extra: dict[str, bytes | None] | None = None) -> Path:
    """folder:ROOT with classes a and b, two 8x8 PNGs each in train/ and test/, plus ``extra`` files
    (a path relative to ROOT -> its bytes, or None for a directory)."""
    for i, rel in enumerate(f"{s}/{c}/{n}.png" for s in ("train", "test") for c in "ab" for n in (0, 1)):
        write_png(root / rel, seed=i)
    for rel, data in (extra or {}).items():
        if data is None:
            (root / rel).mkdir(parents=True)
        else:
            write_bytes(root / rel, data)
    return root


class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_checkpoint(path: Path, style: str) -> Path:
    payload = {"model": {}, "classes": ["a"], "extra": _Payload(path.parent / "PWNED")}
    path.parent.mkdir(parents=True, exist_ok=True)
    if style == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=style == "zip")
    return path


def nothing_ran(w: Path) -> None:
    assert not list(w.rglob("PWNED")), "the payload ran"


def altered_checkpoint(w: Path, name: str, **changes: object) -> Path:
    ckpt = torch.load(w / "run/checkpoint.pt", weights_only=True)
    path = w / "ckpt" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**ckpt, **changes}, path)
    return path


def resnet32_weights(w: Path) -> Path:
    """The run's checkpoint with a ResNet-32's weights (what a swapped or mislabelled file holds)."""
    return altered_checkpoint(
        w, "resnet32-weights.pt", model=build_model("resnet32", num_classes=4).state_dict()
    )


def ten_outputs(w: Path) -> Path:
    """A checkpoint of a 10-class network that names only the run's 4 classes."""
    model = build_model("resnet20", num_classes=10)
    return altered_checkpoint(w, "ten-outputs.pt", model=model.state_dict(), model_config=model.config)


def copy_run(w: Path, source: str, name: str) -> Path:
    shutil.copytree(w / source, w / name)
    return w / name


def killed_run(w: Path) -> Path:
    """A copy of W/run as a SIGKILL would have left it: no summary.json, the lock file with a pid."""
    run = copy_run(w, "run", "killed-run")
    (run / "summary.json").unlink()
    (run / ".run.lock").write_text("999999\n")
    return run


def run_files(name: str) -> tuple[str, ...]:
    return tuple(
        f"{name}/{f}"
        for f in ("config.yaml", "metrics.jsonl", "metrics.csv", "checkpoint.pt", "summary.json")
    )


def rows_without_timing(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s", "eval_s")} for r in rows]


def same_run_as_uninterrupted(w: Path, name: str) -> None:
    """The run in W/name ended exactly where the uninterrupted W/run did: weights and every metrics row."""
    a, b = load_checkpoint(w / name), load_checkpoint(w / "run")
    assert a["iteration"] == b["iteration"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert rows_without_timing(w / name) == rows_without_timing(w / "run")


def small_cifar10() -> dict[str, bytes]:
    """The files of a small extracted cifar-10-batches-py folder (2 images a batch), official format."""
    rng = np.random.default_rng(0)
    files = {}
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        batch = {
            b"labels": rng.integers(0, 10, 2).tolist(),
            b"data": rng.integers(0, 256, (2, 3072), np.uint8),
        }
        files[name] = pickle.dumps(batch, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    files["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in names]}, protocol=2)
    return files


def write_small_cifar10(root: Path, damage: Callable[[bytes], bytes] | None = None) -> Path:
    """ROOT/cifar-10-batches-py from :func:`small_cifar10`, data_batch_3 passed through ``damage``."""
    for name, data in small_cifar10().items():
        write_bytes(
            root / "cifar-10-batches-py" / name, damage(data) if damage and name == "data_batch_3" else data
        )
    return root


@contextlib.contextmanager
def small_cifar10_published() -> Iterator[None]:
    """Take :func:`small_cifar10`'s files as the published CIFAR-10 ones: a folder small enough for the
    table cannot have the official MD5s."""
    official = cifar.CIFAR["cifar10"]
    table = {name: hashlib.md5(data).hexdigest() for name, data in small_cifar10().items()}
    cifar.CIFAR["cifar10"] = dataclasses.replace(official, files=table)
    try:
        yield
    finally:
        cifar.CIFAR["cifar10"] = official


# ----------------------------------------------------------------------------- running a command


def argv(command: str, w: Path) -> list[str]:
    words = shlex.split(command.replace("RUN", RUN))
    return [str(w) if t == "W" else t.replace("W/", f"{w}/") for t in words]


def cli(command: str, w: Path) -> tuple[int, str]:
    """``resnetlab COMMAND`` in-process: (exit code, stderr plus one line per warning a user would see)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # Python's own defaults, not pytest's: what a terminal would show
        warnings.simplefilter("default")
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", quiet)
        code, _, err = run_cli(argv(command, w))
    return code, err + "".join(f"{x.category.__name__}: {x.message}\n" for x in caught)


def runs_of_killed_run(w: Path) -> tuple[int, str]:
    """`resnetlab runs W/killed-run`, whose report must read stopped, with the command that resumes it."""
    code, out, err = run_cli(argv("runs W/killed-run", w))
    assert "; stopped\n" in out and f"resnetlab train --resume {w}/killed-run" in out, out
    return code, err


@contextlib.contextmanager
def as_ordinary_user() -> Iterator[None]:
    """Run as nobody when root, to whom chmod does not stop writes (a no-op for anyone else)."""
    if os.geteuid() != 0:
        yield
        return
    # What the commands import lazily, imported while root can still read root's home.
    import concurrent.futures.process  # noqa: F401
    import encodings.latin_1  # noqa: F401  (the codec CIFAR's protocol-2 pickles name for their bytes)

    import matplotlib.figure  # noqa: F401
    import safetensors.torch  # noqa: F401

    import resnetlab.data.folder
    import resnetlab.evaluation  # noqa: F401

    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def spawn(w: Path, args: list[str], **env: str) -> subprocess.Popen:
    """A real ``python ARGS`` process with this checkout's resnetlab, stderr captured."""
    base = {k: v for k, v in os.environ.items() if k != STOP_AT}
    base |= {
        "PYTHONPATH": str(Path(resnetlab.__file__).resolve().parents[1]),
        "OMP_NUM_THREADS": str(torch.get_num_threads()),  # the same arithmetic as the in-process runs
        "RESNETLAB_DATA_DIR": str(w / "cache"),
    }
    return subprocess.Popen([sys.executable, *args], env=base | env, stderr=subprocess.PIPE, text=True, cwd=w)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=GUARD_S)
    return proc.returncode, err


def wait_until_stopped(proc: subprocess.Popen, guard_s: float = GUARD_S) -> None:
    """Wait for ``proc`` to stop itself (SIGSTOP); the watchdog only ends a hang."""
    watchdog = threading.Timer(guard_s, proc.kill)
    watchdog.start()
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
    finally:
        watchdog.cancel()
    assert os.WIFSTOPPED(status), f"the process ended (status {status:#x}) instead of stopping"


# ----------------------------------------------------------------------------- procedures


def ctrl_c_after_iteration_3(w: Path) -> tuple[int, str]:
    proc = spawn(w, ["-m", "resnetlab", "train", *argv("RUN --out W/ctrl-c", w)], **{STOP_AT: "3"})
    wait_until_stopped(proc)  # right after iteration 3; its checkpoints are due at 2 and 4
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGCONT)
    return finish(proc)


def resumes_from_iteration_3(w: Path) -> None:
    assert load_checkpoint(w / "ctrl-c")["iteration"] == 3
    assert cli("train --resume W/ctrl-c --quiet", w) == (0, "")
    same_run_as_uninterrupted(w, "ctrl-c")


# Stops itself halfway through writing the checkpoint of iteration $STOP_IN_SAVE.
STOP_IN_SAVE = """
import io, os, signal, sys, torch
from resnetlab.cli import main
save = torch.save
def save_half_then_stop(obj, f, *args, **kwargs):
    if not (isinstance(obj, dict) and obj.get("iteration") == int(os.environ["STOP_IN_SAVE"])):
        return save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
    f.write(data[len(data) // 2 :])
torch.save = save_half_then_stop
sys.exit(main(sys.argv[1:]))
"""


def sigkill_inside_the_checkpoint_write(w: Path) -> tuple[int, str]:
    proc = spawn(w, ["-c", STOP_IN_SAVE, *argv("train --resume W/killed --quiet", w)], STOP_IN_SAVE="4")
    try:
        wait_until_stopped(proc)
        temporary = list((w / "killed").glob(".checkpoint.pt.*.part"))
        assert len(temporary) == 1 and temporary[0].stat().st_size > 0, "not inside the write"
    finally:
        proc.kill()
    return finish(proc)


def resume_removes_the_half_written_file(w: Path) -> None:
    assert load_checkpoint(w / "killed")["iteration"] == 3
    assert len(list((w / "killed").glob(".checkpoint.pt.*.part"))) == 1
    assert cli("train --resume W/killed --quiet", w) == (0, "")
    assert not list((w / "killed").glob(".*.part"))
    same_run_as_uninterrupted(w, "killed")


# Runs resnetlab with a file-size limit of $1 bytes: a longer write fails with EFBIG, as on a full disk.
FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of killing the process
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from resnetlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def disk_full_inside_the_checkpoint_write(w: Path) -> tuple[int, str]:
    limit = (w / "full/checkpoint.pt").stat().st_size // 2  # config and metrics fit, a checkpoint does not
    return finish(spawn(w, ["-c", FILE_SIZE_LIMIT, str(limit), *argv("train --resume W/full --quiet", w)]))


def previous_checkpoint_kept(w: Path) -> None:
    assert load_checkpoint(w / "full")["iteration"] == 3 and not list((w / "full").glob(".*.part"))


def disk_full_at_the_first_write(w: Path) -> tuple[int, str]:
    return finish(spawn(w, ["-c", FILE_SIZE_LIMIT, "300", *argv("train RUN --out W/full-at-start", w)]))


# Makes `import fcntl` fail, as it does on Windows (the only file lock left is then msvcrt's).
NO_FCNTL = "import sys\nsys.modules['fcntl'] = None  # `import fcntl` now raises ImportError\n"


def without_fcntl(command: str) -> Callable[[Path], tuple[int, str]]:
    """``resnetlab COMMAND`` as a real process in which ``import fcntl`` fails."""

    def run(w: Path) -> tuple[int, str]:
        main = "from resnetlab.cli import main\nsys.exit(main(sys.argv[1:]))\n"
        return finish(spawn(w, ["-c", NO_FCNTL + main, *argv(command, w)]))

    return run


def without(command: str, *modules: str) -> Callable[[Path], tuple[int, str]]:
    """``resnetlab COMMAND`` in-process where ``import MODULE`` fails for each of ``modules``, as where
    they are not installed."""

    def run(w: Path) -> tuple[int, str]:
        with pytest.MonkeyPatch.context() as patch:
            for name in modules:
                patch.setitem(sys.modules, name, None)
            return cli(command, w)

    return run


def without_any_file_lock(w: Path) -> tuple[int, str]:
    """train on a system that has neither fcntl nor msvcrt."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runlock, "fcntl", None)
        patch.setattr(runlock, "msvcrt", None)
        return cli("train RUN --out W/unlocked", w)


def no_onnx_file(w: Path) -> None:
    assert not (w / "model.onnx").exists()


def no_tensorboard_folder(w: Path) -> None:
    assert (w / "no-tensorboard/summary.json").is_file() and not (w / "no-tensorboard/tensorboard").exists()


def nothing_locked(w: Path) -> None:
    assert not (w / "unlocked/.run.lock").exists() and not (w / "unlocked/checkpoint.pt").exists()


def evaluated_without_fcntl(w: Path) -> None:
    assert json.loads((w / "eval-no-fcntl/eval-test.json").read_text())["images"] == 32


def cifar_info(command: str, unprivileged: bool = False) -> Callable[[Path], tuple[int, str]]:
    """A procedure: ``resnetlab COMMAND`` with the small CIFAR-10 as the published one, resnetlab's
    own cache in W/own-cache (writable by anyone: it is where a read-only data dir's cache goes)."""

    def run(w: Path) -> tuple[int, str]:
        own = w / "own-cache"
        own.mkdir(exist_ok=True)
        own.chmod(0o777)
        user = as_ordinary_user() if unprivileged else contextlib.nullcontext()
        with small_cifar10_published(), environment(RESNETLAB_CACHE=str(own)), user:
            return cli(command, w)

    return run


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables set for the block only."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cifar_corrupt(folder: str) -> str:
    """The one line for a damaged data_batch_3 in W/FOLDER/cifar-10-batches-py (the MD5s vary with numpy's
    pickles and the damage)."""
    return (
        f"resnetlab: error: W/{folder}/cifar-10-batches-py/data_batch_3 is corrupt or not the official "
        "CIFAR-10 file (MD5 …, expected …): extract cifar-10-batches-py again from the official "
        "cifar-10-python.tar.gz, or pass --data-dir DIR with the archive or a good copy"
    )


def read_only_cifar(w: Path) -> None:
    root = write_small_cifar10(w / "data/cifar-ro")
    for path in (root / "cifar-10-batches-py", root):
        path.chmod(0o555)


def cached_in_own_cache(w: Path) -> None:
    assert not (w / "data/cifar-ro/cifar10-uint8.pt").exists()
    assert len(list((w / "own-cache/cifar").glob("cifar10-*-uint8.pt"))) == 1


def predict_above_pillows_warning_limit(w: Path) -> tuple[int, str]:
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000  # Pillow warns above 1000 pixels and refuses above 2000
    try:
        return cli("predict W/run W/img/wide.png", w)
    finally:
        Image.MAX_IMAGE_PIXELS = old


def metrics_rewritten_whole(w: Path) -> None:
    same_run_as_uninterrupted(w, "cut-metrics")


def cut_mid_line(path: Path) -> None:
    text = path.read_bytes()
    path.write_bytes(text[: len(text) - 25])


# ----------------------------------------------------------------------------- the cases


def _folder_case(id: str, fault: str, extra: dict[str, bytes | None], code: int, message: str, **kw) -> Case:
    return Case(
        id,
        fault,
        f"data info --dataset folder:W/data/{id}",
        code,
        message,
        setup=lambda w: image_folder(w / "data" / id, extra),
        **kw,
    )


def _bad_image(id: str, reason: str) -> str:
    return (
        f"resnetlab: error: cannot decode image W/data/{id}/train/a/{reason}: replace or delete it "
        "(`resnetlab data info --skip-bad-images` lists every unreadable image)"
    )


def _predict(id: str, fault: str, make: Callable[[Path], Path], code: int = 0, message: str = "") -> Case:
    note = "prints the 4 classes with probabilities" if code == 0 else ""
    return Case(id, fault, f"predict W/run W/img/{id}", code, message, note=note, setup=make)


REFUSED = (
    "it contains pickled Python objects, not only tensors and plain types, and loading them could run "
    "arbitrary code"
)
R32 = (
    "the checkpoint's weights do not fit its network (another architecture or class count?): "
    "72 unexpected tensor(s) (layer1.3.conv1.weight and 71 more)"
)


def _payload(id: str, fault: str, command: str, file: str, style: str) -> Case:
    """``command`` given W/``file``, a checkpoint whose pickle calls os.system: refused, nothing runs."""
    return Case(
        id,
        fault,
        command,
        2,
        f"resnetlab: error: refusing to load W/{file}: {REFUSED}",
        note="the command never runs",
        setup=lambda w: payload_checkpoint(w / file, style),
        check=nothing_ran,
    )


CASES: list[Case] = [
    # --- image folders (folder:PATH) for `data info` and `train`
    _folder_case(
        "damaged-png",
        "a PNG with less image data than its header says, in a class folder",
        {"train/a/bad.png": short_png()},
        2,
        _bad_image("damaged-png", "bad.png (OSError: image file is truncated…)"),
    ),
    _folder_case(
        "truncated-png",
        "a PNG cut in half (an interrupted copy)",
        {"train/a/cut.png": half_png()},
        2,
        _bad_image("truncated-png", "cut.png (OSError: image file is truncated…)"),
    ),
    _folder_case(
        "empty-file",
        "an empty (0-byte) .jpg",
        {"train/a/empty.jpg": b""},
        2,
        _bad_image("empty-file", "empty.jpg (ValueError: the file is empty)"),
    ),
    _folder_case(
        "not-an-image",
        "a text file named .jpg",
        {"train/a/notes.jpg": b"not an image\n"},
        2,
        _bad_image(
            "not-an-image",
            "notes.jpg (UnidentifiedImageError: cannot identify image file "
            "'W/data/not-an-image/train/a/notes.jpg')",
        ),
    ),
    Case(
        "skip-bad-images",
        "a damaged PNG, with --skip-bad-images",
        "data info --dataset folder:W/data/skip-bad-images --skip-bad-images",
        0,
        "resnetlab: warning: skipped 1 unreadable image(s): W/data/skip-bad-images/train/a/bad.png",
        note="lists the 7 good images",
        setup=lambda w: image_folder(w / "data/skip-bad-images", {"train/a/bad.png": short_png()}),
    ),
    _folder_case(
        "other-files",
        "a README.txt and a folder named x.png in a class folder",
        {"train/a/README.txt": b"notes\n", "train/b/x.png": None},
        0,
        "",
        note="both ignored: only image files count",
    ),
    Case(
        "image-modes",
        "grayscale, RGBA, CMYK and palette images among RGB ones",
        "data info --dataset folder:W/data/image-modes",
        0,
        note="all decoded to RGB",
        setup=lambda w: image_folder(
            w / "data/image-modes",
            {
                f"train/a/{m}.{e}": image_bytes(m, e)
                for m, e in (("L", "png"), ("RGBA", "png"), ("CMYK", "jpeg"), ("P", "gif"))
            },
        ),
    ),
    Case(
        "train-damaged-png",
        "a damaged PNG in the folder given to train",
        "train RUN --dataset folder:W/data/train-damaged-png --batch-size 4 --out W/folder-run",
        2,
        _bad_image("train-damaged-png", "bad.png (OSError: image file is truncated…)"),
        setup=lambda w: image_folder(w / "data/train-damaged-png", {"train/a/bad.png": short_png()}),
    ),
    _folder_case(
        "mixed-sizes",
        "one 9x8 image among 8x8 ones",
        {"train/a/odd.png": image_bytes(size=(9, 8))},
        2,
        "resnetlab: error: images differ in size: 8x8 (W/data/mixed-sizes/train/a/0.png) and 9x8 "
        "(W/data/mixed-sizes/train/a/odd.png); folder:PATH needs one size for all images: resize them, "
        "or use imagenet:PATH to stream large images with crops",
    ),
    _folder_case(
        "empty-class",
        "a class folder with no images",
        {"train/c": None, "test/c": None},
        2,
        "resnetlab: error: class folder W/data/empty-class/train/c has no images (.bmp, .gif, .jpeg, .jpg, "
        ".png, .ppm, .tif, .tiff, .webp): add images or remove the folder",
    ),
    Case(
        "dataset-is-a-file",
        "folder:PATH where PATH is a file",
        "data info --dataset folder:W/a-file",
        2,
        "resnetlab: error: dataset path W/a-file is not a folder: expected W/a-file/train/<class>/<images>",
    ),
    Case(
        "train-is-a-file",
        "a file named train where the train/ folder should be",
        "data info --dataset folder:W/data/train-is-a-file",
        2,
        "resnetlab: error: W/data/train-is-a-file has no train/ folder: expected "
        "W/data/train-is-a-file/train/<class>/<images> and W/data/train-is-a-file/val/ or "
        "W/data/train-is-a-file/test/",
        setup=lambda w: write_bytes(w / "data/train-is-a-file/train", b"a file"),
    ),
    Case(
        "missing-folder",
        "a folder that does not exist",
        "data info --dataset folder:W/nowhere",
        2,
        "resnetlab: error: dataset folder W/nowhere does not exist: check the PATH in folder:PATH / "
        "imagenet:PATH",
    ),
    # --- an extracted CIFAR-10 folder; a small one the tests build, its MD5s taken as the published ones
    Case(
        "cifar-batch-altered",
        "one byte changed in data_batch_3 of an extracted cifar-10-batches-py folder",
        "data info --dataset cifar10 --data-dir W/data/cifar-altered",
        2,
        cifar_corrupt("data/cifar-altered"),
        note="every file is checked against its published MD5 before use; no decoded cache is written",
        setup=lambda w: write_small_cifar10(
            w / "data/cifar-altered",
            lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) + b[len(b) // 2 + 1 :],
        ),
        run=cifar_info("data info --dataset cifar10 --data-dir W/data/cifar-altered"),
    ),
    Case(
        "cifar-batch-truncated",
        "data_batch_3 of an extracted cifar-10-batches-py folder cut in half (an interrupted copy)",
        "data info --dataset cifar10 --data-dir W/data/cifar-cut",
        2,
        cifar_corrupt("data/cifar-cut"),
        note="no decoded cache is written",
        setup=lambda w: write_small_cifar10(w / "data/cifar-cut", lambda b: b[: len(b) // 2]),
        run=cifar_info("data info --dataset cifar10 --data-dir W/data/cifar-cut"),
    ),
    Case(
        "cifar-read-only",
        "an extracted cifar-10-batches-py folder in a read-only --data-dir",
        "data info --dataset cifar10 --data-dir W/data/cifar-ro",
        0,
        note="lists the dataset (run as an ordinary user)",
        files="unchanged; the decoded cache goes to $RESNETLAB_CACHE/cifar/, else ~/.cache/resnetlab/cifar/",
        setup=read_only_cifar,
        run=cifar_info("data info --dataset cifar10 --data-dir W/data/cifar-ro", unprivileged=True),
        check=cached_in_own_cache,
    ),
    # --- image files given to predict
    _predict("gray.png", "a grayscale (L) PNG", lambda w: write_png(w / "img/gray.png", "L")),
    _predict("rgba.png", "an RGBA PNG", lambda w: write_png(w / "img/rgba.png", "RGBA")),
    _predict("cmyk.jpg", "a CMYK JPEG", lambda w: write_png(w / "img/cmyk.jpg", "CMYK")),
    _predict("palette.gif", "a palette (P) GIF", lambda w: write_png(w / "img/palette.gif", "P")),
    _predict("bilevel.png", "a 1-bit PNG", lambda w: write_png(w / "img/bilevel.png", "1")),
    _predict(
        "large.png",
        "a 6000x4000 PNG (24 megapixels)",
        lambda w: write_bytes(w / "img/large.png", raw_png(6000, 4000, bytes(4000 * (1 + 6000 * 3)))),
    ),
    Case(
        "above-warning-limit",
        "an image above Pillow's decompression-bomb warning size (89 Mpx; lowered to 1000 px here)",
        "predict W/run W/img/wide.png",
        0,
        note="prints the classes; Pillow's warning is not shown (the user named the file)",
        setup=lambda w: write_png(w / "img/wide.png", size=(40, 30)),
        run=predict_above_pillows_warning_limit,
    ),
    _predict(
        "bomb.png",
        "a PNG whose header claims 20000x10000 pixels (a decompression bomb)",
        lambda w: write_bytes(w / "img/bomb.png", raw_png(20000, 10000, bytes(100))),
        2,
        "resnetlab: error: cannot read image W/img/bomb.png: Image size (200000000 pixels) exceeds limit "
        "of 178956970 pixels, could be decompression bomb DOS attack.",
    ),
    _predict(
        "short.png",
        "a PNG with less image data than its header says",
        lambda w: write_bytes(w / "img/short.png", short_png()),
        2,
        "resnetlab: error: cannot read image W/img/short.png: image file is truncated…",
    ),
    _predict(
        "cut.png",
        "a PNG cut in half",
        lambda w: write_bytes(w / "img/cut.png", half_png()),
        2,
        "resnetlab: error: cannot read image W/img/cut.png: image file is truncated…",
    ),
    _predict(
        "empty.jpg",
        "an empty (0-byte) file",
        lambda w: write_bytes(w / "img/empty.jpg", b""),
        2,
        "resnetlab: error: cannot read image W/img/empty.jpg: cannot identify image file 'W/img/empty.jpg'",
    ),
    _predict(
        "notes.jpg",
        "a text file named .jpg",
        lambda w: write_bytes(w / "img/notes.jpg", b"hello\n"),
        2,
        "resnetlab: error: cannot read image W/img/notes.jpg: cannot identify image file 'W/img/notes.jpg'",
    ),
    Case(
        "image-missing",
        "an image that does not exist",
        "predict W/run W/img/missing.png",
        2,
        "resnetlab: error: image W/img/missing.png does not exist",
    ),
    Case(
        "image-is-a-directory",
        "a directory where an image file is expected",
        "predict W/run W/ckpt",
        2,
        "resnetlab: error: image W/ckpt is a directory, not an image file",
        setup=lambda w: (w / "ckpt").mkdir(exist_ok=True),
    ),
    # --- checkpoints
    _payload(
        "payload-eval",
        "a checkpoint whose pickle calls os.system (zip format)",
        "eval W/ckpt/payload.pt",
        "ckpt/payload.pt",
        "zip",
    ),
    _payload(
        "payload-predict",
        "the same payload as a plain pickle",
        "predict W/ckpt/payload.pkl W/img/any.png",
        "ckpt/payload.pkl",
        "pickle",
    ),
    _payload(
        "payload-export",
        "the same payload in torch's legacy format",
        "export W/ckpt/payload-legacy.pt",
        "ckpt/payload-legacy.pt",
        "legacy",
    ),
    _payload(
        "payload-resume",
        "the payload given to train --resume",
        "train --resume W/ckpt/payload.pt --out W/evil-run",
        "ckpt/payload.pt",
        "zip",
    ),
    Case(
        "checkpoint-truncated",
        "a checkpoint cut in half",
        "eval W/ckpt/half.pt",
        2,
        "resnetlab: error: checkpoint W/ckpt/half.pt is truncated or corrupt (PytorchStreamReader failed "
        "reading zip archive: …)",
        setup=lambda w: write_bytes(w / "ckpt/half.pt", (w / "run/checkpoint.pt").read_bytes()[:1_000_000]),
    ),
    Case(
        "checkpoint-empty",
        "an empty checkpoint file",
        "predict W/ckpt/empty.pt W/img/any.png",
        2,
        "resnetlab: error: checkpoint W/ckpt/empty.pt is truncated or corrupt (EOFError)",
        setup=lambda w: write_bytes(w / "ckpt/empty.pt", b""),
    ),
    Case(
        "run-dir-without-checkpoint",
        "a directory without checkpoint.pt where a checkpoint is expected",
        "eval W/img",
        2,
        "resnetlab: error: W/img has neither a checkpoint.pt nor an exported NAME.safetensors"
        " with its NAME.json",
        setup=lambda w: (w / "img").mkdir(exist_ok=True),
    ),
    Case(
        "other-architecture-eval",
        "a checkpoint holding a ResNet-32's weights under a ResNet-20 config",
        "eval W/ckpt/resnet32-weights.pt --out W/evaluation",
        2,
        f"resnetlab: error: {R32}",
        setup=resnet32_weights,
    ),
    Case(
        "other-architecture-predict",
        "the same, given to predict",
        "predict W/ckpt/resnet32-weights.pt W/img/any.png",
        2,
        f"resnetlab: error: {R32}",
        setup=resnet32_weights,
    ),
    Case(
        "other-architecture-export",
        "the same, given to export",
        "export W/ckpt/resnet32-weights.pt",
        2,
        f"resnetlab: error: {R32}",
        note="no weights file written",
        setup=resnet32_weights,
    ),
    Case(
        "other-architecture-resume",
        "the same, given to train --resume",
        "train --resume W/ckpt/resnet32-weights.pt --out W/resumed-r32",
        2,
        f"resnetlab: error: {R32}",
        setup=resnet32_weights,
    ),
    Case(
        "class-count-predict",
        "a checkpoint naming 4 classes for a 10-output network",
        "predict W/ckpt/ten-outputs.pt W/img/any.png",
        2,
        "resnetlab: error: the checkpoint names 4 classes but its network has 10 outputs",
        setup=ten_outputs,
    ),
    Case(
        "class-count-resume",
        "the same, given to train --resume",
        "train --resume W/ckpt/ten-outputs.pt --out W/resumed-10",
        2,
        "resnetlab: error: --resume W/ckpt/ten-outputs.pt: the checkpoint's network differs from resnet20 "
        "{'num_classes': 4, 'zero_init_residual': False}",
        setup=ten_outputs,
    ),
    Case(
        "class-count-eval",
        "eval on a dataset with another class count",
        "eval W/run --dataset synthetic:64,32,8,5",
        2,
        "resnetlab: error: dataset synthetic:64,32,8,5 has classes ['class0', 'class1', 'class2', 'class3', "
        "'class4']..., but the checkpoint was trained on ['class0', 'class1', 'class2', 'class3']...",
    ),
    Case(
        "resume-other-model",
        "train --resume with another --model",
        "train --resume W/run --model resnet32",
        2,
        "resnetlab: error: --resume W/run/checkpoint.pt: the checkpoint was trained with --model resnet20, "
        "not resnet32 (leave --model out when resuming)",
    ),
    # --- run directories
    Case(
        "truncated-metrics",
        "metrics.jsonl cut mid-line, then train --resume",
        "train --resume W/cut-metrics --quiet",
        0,
        note="continues from iteration 3 to the same result as an uninterrupted run",
        files="metrics.jsonl rewritten whole from the checkpoint's rows; the run continues",
        updates=run_files("cut-metrics"),
        setup=lambda w: cut_mid_line(copy_run(w, "unfinished", "cut-metrics") / "metrics.jsonl"),
        check=metrics_rewritten_whole,
    ),
    Case(
        "damaged-summary",
        "summary.json of a finished run damaged, then the same train again",
        "train RUN --out W/bad-summary",
        2,
        "resnetlab: error: cannot read W/bad-summary/summary.json (JSONDecodeError: …): rewrite it with "
        "--resume W/bad-summary or start over with --overwrite",
        setup=lambda w: write_bytes(copy_run(w, "run", "bad-summary") / "summary.json", b'{"final": {"top1'),
    ),
    Case(
        "incomplete-summary",
        "summary.json of a finished run valid JSON but without its results, then the same train again",
        "train RUN --out W/thin-summary",
        2,
        "resnetlab: error: cannot read W/thin-summary/summary.json (no number final.top1_error): rewrite it "
        "with --resume W/thin-summary or start over with --overwrite",
        setup=lambda w: write_bytes(
            copy_run(w, "run", "thin-summary") / "summary.json",
            b'{"params": 1, "wall_time_s": 2.0, "final": {}}',
        ),
    ),
    Case(
        "incomplete-record",
        "a reproduction record without what its report section reads, given to report",
        "report W/thin-record",
        2,
        "resnetlab: error: W/thin-record/degradation.json is not a complete degradation record "
        "(KeyError: 'runs'): rerun `resnetlab reproduce degradation`",
        setup=lambda w: write_bytes(w / "thin-record" / "degradation.json", b'{"experiment": "degradation"}'),
    ),
    Case(
        "damaged-config",
        "config.yaml damaged, then train --resume",
        "train --resume W/bad-config",
        2,
        "resnetlab: error: cannot read W/bad-config/config.yaml: while parsing a flow sequence",
        setup=lambda w: write_bytes(
            copy_run(w, "unfinished", "bad-config") / "config.yaml", b"model: [resnet20\n"
        ),
    ),
    Case(
        "out-is-a-file",
        "train --out naming a file",
        "train RUN --out W/a-file",
        2,
        "resnetlab: error: --out W/a-file exists and is not a directory",
    ),
    Case(
        "out-under-a-file",
        "train --out inside a file (a path that cannot exist)",
        "train RUN --out W/a-file/run",
        2,
        "resnetlab: error: cannot write to the output directory W/a-file/run: Not a directory",
    ),
    Case(
        "eval-out-is-a-file",
        "eval --out naming a file",
        "eval W/run --out W/a-file",
        2,
        "resnetlab: error: cannot create the output directory W/a-file: File exists",
    ),
    Case(
        "export-out-is-a-directory",
        "export --out naming a directory",
        "export W/run --out W/img",
        2,
        "resnetlab: error: cannot write W/img: Is a directory",
        setup=lambda w: (w / "img").mkdir(exist_ok=True),
    ),
    Case(
        "config-is-a-directory",
        "train --config naming a directory",
        "train RUN --config W/img --out W/x",
        2,
        "resnetlab: error: cannot read the config file W/img: Is a directory",
        setup=lambda w: (w / "img").mkdir(exist_ok=True),
    ),
    Case(
        "read-only-train",
        "train --out inside a read-only directory",
        "train RUN --out W/ro/run",
        2,
        "resnetlab: error: cannot write to the output directory W/ro/run: Permission denied",
        unprivileged=True,
    ),
    Case(
        "read-only-resume",
        "train --resume of a run in a read-only directory",
        "train --resume W/ro-run",
        2,
        "resnetlab: error: cannot write to the output directory W/ro-run: Permission denied",
        unprivileged=True,
        setup=lambda w: copy_run(w, "unfinished", "ro-run").chmod(0o555),
    ),
    Case(
        "read-only-eval",
        "eval --out a read-only directory",
        "eval W/run --out W/ro",
        2,
        "resnetlab: error: cannot write the evaluation to W/ro: Permission denied",
        unprivileged=True,
    ),
    Case(
        "read-only-export",
        "export --out into a read-only directory",
        "export W/run --out W/ro/resnet20.safetensors",
        2,
        "resnetlab: error: cannot write W/ro/resnet20.safetensors: Permission denied",
        unprivileged=True,
    ),
    Case(
        "read-only-cache",
        "--data-dir a read-only directory (the decoded-image cache cannot be written)",
        "data info --dataset folder:W/data/ro-cache --data-dir W/ro",
        0,
        "resnetlab: warning: could not write the decoded cache W/ro/folders/… ([Errno 13] Permission denied: "
        "'W/ro/folders'); the next run will decode again",
        note="lists the dataset",
        unprivileged=True,
        setup=lambda w: image_folder(w / "data/ro-cache"),
    ),
    Case(
        "runs-missing",
        "`runs` given a folder that does not exist",
        "runs W/nowhere",
        2,
        "resnetlab: error: W/nowhere does not exist",
    ),
    Case(
        "runs-cut-metrics",
        "`runs` on a run whose metrics.jsonl was cut mid-line (an interrupted copy)",
        "runs W/cut-run",
        2,
        "resnetlab: error: cannot read W/cut-run/metrics.jsonl (damaged at line 2): delete the run and rerun",
        setup=lambda w: write_bytes(
            w / "cut-run/metrics.jsonl", b'{"kind": "train", "iteration": 2}\n{"kind": "tr'
        ),
    ),
    Case(
        "runs-killed-run",
        "`runs` on a run killed mid-way: its lock file left behind, no summary.json",
        "runs W/killed-run",
        0,
        note="reads it as stopped (the lock has no live holder) and prints the `--resume` command",
        setup=lambda w: killed_run(w),
        run=runs_of_killed_run,
    ),
    # --- flags given a wrong type, a negative or zero value, or an unknown name
    Case(
        "iterations-type",
        "train --iterations abc",
        "train RUN --iterations abc",
        2,
        "resnetlab train: error: argument --iterations: invalid int value: 'abc'",
    ),
    Case(
        "lr-zero",
        "train --lr 0",
        "train RUN --lr 0 --out W/x",
        2,
        "resnetlab: error: recipe 'cifar-paper': lr must be a positive number",
    ),
    Case(
        "batch-negative",
        "train --batch-size -1",
        "train RUN --batch-size -1 --out W/x",
        2,
        "resnetlab: error: recipe 'cifar-paper': batch_size must be at least 1",
    ),
    Case(
        "weight-decay-negative",
        "train --weight-decay -1",
        "train RUN --weight-decay -1 --out W/x",
        2,
        "resnetlab: error: recipe 'cifar-paper': weight_decay must be >= 0",
    ),
    Case(
        "checkpoint-every-zero",
        "train --checkpoint-every 0",
        "train RUN --checkpoint-every 0 --out W/x",
        2,
        "resnetlab: error: --checkpoint-every must be a positive count, got 0",
    ),
    Case(
        "budget-nan",
        "train --budget-minutes nan",
        "train --model resnet20 --dataset synthetic --budget-minutes nan --out W/x",
        2,
        "resnetlab: error: --budget-minutes must be a positive number of minutes",
    ),
    Case(
        "seed-type",
        "train --seed 1.5",
        "train RUN --seed 1.5",
        2,
        "resnetlab train: error: argument --seed: invalid int value: '1.5'",
    ),
    Case(
        "unknown-model",
        "train --model resnt20",
        "train --model resnt20 --dataset synthetic --out W/x",
        2,
        "resnetlab: error: unknown model 'resnt20' (did you mean resnet20, resnet1202, resnet50?)",
    ),
    Case(
        "unknown-recipe",
        "train --recipe nope",
        "train RUN --recipe nope --out W/x",
        2,
        "resnetlab: error: unknown recipe 'nope' (choose from cifar-paper, cifar-fast, cifar-fast30, "
        "imagenet-paper)",
    ),
    Case(
        "eval-batch-zero",
        "eval --batch-size 0",
        "eval W/run --batch-size 0",
        2,
        "resnetlab: error: --batch-size must be positive, got 0",
    ),
    Case(
        "eval-split",
        "eval --split train",
        "eval W/run --split train",
        2,
        "resnetlab eval: error: argument --split: invalid choice: 'train' (choose from 'test', 'val')",
    ),
    Case(
        "predict-top-zero",
        "predict --top 0",
        "predict W/run W/img/any.png --top 0",
        2,
        "resnetlab: error: --top must be at least 1, got 0",
    ),
    Case(
        "predict-top-type",
        "predict --top x",
        "predict W/run W/img/any.png --top x",
        2,
        "resnetlab predict: error: argument --top: invalid int value: 'x'",
    ),
    Case(
        "unknown-format",
        "export --format tflite",
        "export W/run --format tflite",
        2,
        "resnetlab export: error: argument --format: invalid choice: 'tflite' (choose from 'safetensors', "
        "'onnx')",
    ),
    Case(
        "data-no-dataset",
        "data info without --dataset",
        "data info",
        2,
        "resnetlab data info: error: the following arguments are required: --dataset",
    ),
    Case(
        "unknown-dataset",
        "data info --dataset mnist",
        "data info --dataset mnist",
        2,
        "resnetlab: error: unknown dataset 'mnist': expected cifar10, cifar100, folder:PATH, imagenet:PATH "
        "or synthetic[:TRAIN,TEST,SIZE,CLASSES]",
    ),
    Case(
        "synthetic-zero",
        "data info --dataset synthetic:0",
        "data info --dataset synthetic:0",
        2,
        "resnetlab: error: bad synthetic spec '0': expected up to four positive integers "
        "TRAIN,TEST,SIZE,CLASSES, e.g. synthetic:512,256,16,10",
    ),
    Case(
        "input-size-negative",
        "summary --input-size -5",
        "summary resnet20 --input-size -5",
        2,
        "resnetlab: error: --input-size must be a positive number of pixels, got -5",
    ),
    Case(
        "models-no-match",
        "models 'zzz*'",
        "models zzz*",
        2,
        "resnetlab: error: no registered model matches 'zzz*' (see `resnetlab models`)",
    ),
    Case(
        "seeds-zero",
        "reproduce --seeds 0",
        "reproduce degradation --seeds 0 --out W/x",
        2,
        "resnetlab reproduce degradation: error: argument --seeds: expected a positive integer, got '0'",
    ),
    Case(
        "evals-negative",
        "reproduce --evals -1",
        "reproduce degradation --evals -1 --out W/x",
        2,
        "resnetlab: error: --evals must be 0 (none) or a positive count, got -1",
    ),
    Case(
        "depth-zero",
        "reproduce shortcuts --depth 0",
        "reproduce shortcuts --depth 0 --out W/x",
        2,
        "resnetlab: error: CIFAR nets have depth 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got 0",
    ),
    Case(
        "unknown-experiment",
        "reproduce nope",
        "reproduce nope",
        2,
        "resnetlab reproduce: error: argument EXPERIMENT: invalid choice: 'nope' (choose from 'degradation', "
        "'responses', 'gradients', 'identity', 'shortcuts', 'cifar-table', 'lesion', 'landscape')",
    ),
    # --- faults while training
    Case(
        "nan-loss",
        "a loss that becomes NaN (--lr 1e30)",
        "train RUN --lr 1e30 --checkpoint-every 1 --out W/diverged",
        3,
        "resnetlab: error: training diverged: the training loss became non-finite at iteration 2 (lr 1e+30); "
        "the last good checkpoint W/diverged/checkpoint.pt (iteration 1) is intact",
        note="the non-finite weights are never saved",
    ),
    Case(
        "ctrl-c",
        "Ctrl-C (SIGINT) after iteration 3 (checkpoints due at 2 and 4)",
        "train RUN --out W/ctrl-c; SIGINT; then train --resume W/ctrl-c",
        130,
        "resnetlab: interrupted at iteration 3 of 6; its checkpoint is in W/ctrl-c: continue with "
        "`resnetlab train --resume W/ctrl-c`",
        note="--resume then ends exactly where an uninterrupted run ends",
        files="checkpoint.pt written at iteration 3",
        run=ctrl_c_after_iteration_3,
        check=resumes_from_iteration_3,
    ),
    Case(
        "sigkill-in-checkpoint-write",
        "SIGKILL halfway through writing the checkpoint of iteration 4",
        "train --resume W/killed (stopped at 3); SIGKILL; then train --resume W/killed",
        -signal.SIGKILL,
        note="--resume then removes the half-written temporary file and ends exactly where an "
        "uninterrupted run ends",
        files="checkpoint.pt of iteration 3 intact (atomic write)",
        updates=run_files("killed")[:3],
        setup=lambda w: copy_run(w, "unfinished", "killed"),
        run=sigkill_inside_the_checkpoint_write,
        check=resume_removes_the_half_written_file,
    ),
    Case(
        "disk-full-in-checkpoint",
        "the disk fills while the checkpoint of iteration 4 is written (RLIMIT_FSIZE)",
        "train --resume W/full (stopped at 3)",
        2,
        "resnetlab: error: cannot write the checkpoint W/full/checkpoint.pt: File too large; the checkpoint "
        "there before, if any, is unchanged",
        files="checkpoint.pt of iteration 3 intact, no temporary file left; config and metrics updated",
        updates=run_files("full")[:3],
        setup=lambda w: copy_run(w, "unfinished", "full"),
        run=disk_full_inside_the_checkpoint_write,
        check=previous_checkpoint_kept,
    ),
    # --- optional dependencies ([onnx], [tensorboard]) and what the platform lacks
    Case(
        "onnx-missing",
        "export --format onnx where onnx is not installed (no [onnx] extra)",
        "export W/run --format onnx --out W/model.onnx",
        2,
        "resnetlab: error: ONNX export needs onnx, which is not installed: pip install 'resnetlab[onnx]'",
        note="no file written",
        run=without("export W/run --format onnx --out W/model.onnx", "onnx"),
        check=no_onnx_file,
    ),
    Case(
        "onnxscript-missing",
        "export --format onnx with onnx but without onnxscript (torch's ONNX exporter needs both)",
        "export W/run --format onnx --out W/model.onnx",
        2,
        "resnetlab: error: ONNX export needs onnxscript, which is not installed: pip install "
        "'resnetlab[onnx]'",
        note="no file written",
        run=without("export W/run --format onnx --out W/model.onnx", "onnxscript"),
        check=no_onnx_file,
    ),
    Case(
        "tensorboard-missing",
        "train where tensorboard is not installed (no [tensorboard] extra)",
        "train RUN --out W/no-tensorboard",
        0,
        note="trains as usual; TensorBoard event files (RUN/tensorboard/) are written only with the extra",
        run=without("train RUN --out W/no-tensorboard", "tensorboard", "torch.utils.tensorboard"),
        check=no_tensorboard_folder,
    ),
    Case(
        "no-fcntl",
        "`import fcntl` fails (Windows); eval of a run",
        "eval W/run --out W/eval-no-fcntl",
        0,
        note="evaluates: `import resnetlab`, `create_model`, eval and predict need no fcntl (on Windows, "
        "train locks its run directory with msvcrt)",
        run=without_fcntl("eval W/run --out W/eval-no-fcntl"),
        check=evaluated_without_fcntl,
    ),
    Case(
        "no-file-lock",
        "train on a system with neither fcntl nor msvcrt file locks",
        "train RUN --out W/unlocked",
        2,
        "resnetlab: error: cannot lock W/unlocked for this run: the system has no file lock resnetlab can "
        "use (neither fcntl nor msvcrt), and without one two runs could write one directory",
        note="nothing trains",
        run=without_any_file_lock,
        check=nothing_locked,
    ),
    Case(
        "disk-full-at-start",
        "the disk is full from the first write on (RLIMIT_FSIZE 300 bytes)",
        "train RUN --out W/full-at-start",
        2,
        "resnetlab: error: cannot write W/full-at-start/config.yaml: File too large",
        run=disk_full_at_the_first_write,
    ),
]
