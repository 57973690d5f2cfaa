"""`resnetlab convert --from akamaster`: their layout into our standard nets, function-preserving.

Their nets are stood in for by randomly initialised ones in their layout (akamaster_layout.py); the
converted net must give their logits, be our plain ``create_model(NAME)``, and work in every command.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from akamaster_layout import random_their_net, save_their_way
from cli_runner import run_cli
from resnetlab import create_model
from resnetlab.data.augment import Normalizer
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.weights import load_weights
from resnetlab.weights.convert import AKAMASTER_MEAN, AKAMASTER_STD, CIFAR10_CLASSES, convert_akamaster


@pytest.fixture(scope="module")
def r20(tmp_path_factory):
    """(their net, its file) for depth 20."""
    net = random_their_net(20)
    return net, save_their_way(net, tmp_path_factory.mktemp("theirs") / "resnet20-0000.th")


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The net's logits computed in float64 on a copy (see _assert_same for why)."""
    with torch.no_grad():
        return copy.deepcopy(model).double().eval()(x.double())


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Both nets run in float64: the permuted channels change the order of every sum over input
    channels, which float32 turns into differences near 1e-6 that vary with the CPU's kernels; in
    float64 they stay near 1e-14, far below 1e-9, while a wrong permutation moves logits by > 1e-2."""
    assert ours.dtype == theirs.dtype == torch.float64
    assert theirs.abs().max() > 0.1  # a meaningful comparison, not two near-zero outputs
    assert (ours - theirs).abs().max() < 1e-9


@pytest.mark.parametrize("depth", [20, 56])
def test_converted_net_gives_their_logits(depth, r20, tmp_path):
    if depth == 20:
        net, path = r20
    else:
        net = random_their_net(depth, seed=depth)
        path = save_their_way(net, tmp_path / f"resnet{depth}.th")
    ckpt = convert_akamaster(path, f"resnet{depth}")
    ours = model_from_checkpoint(ckpt)
    # Our standard net, option A padding after the data: nothing special about it.
    assert ours.config == create_model(f"resnet{depth}").config
    x = torch.randn(4, 3, 32, 32)
    _assert_same(_logits(ours, x), _logits(net, x))
    # Their normalisation (ImageNet statistics per channel) and CIFAR-10's classes come along.
    norm = ckpt["normalizer"]
    assert norm["mode"] == "per-channel" and norm["mean"].shape == norm["std"].shape == (3, 1, 1)
    assert torch.equal(norm["mean"].flatten(), torch.tensor(AKAMASTER_MEAN))
    assert torch.equal(norm["std"].flatten(), torch.tensor(AKAMASTER_STD))
    assert ckpt["classes"] == list(CIFAR10_CLASSES) and ckpt["image_size"] == [32, 32]
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    expected = (images.float() / 255 - norm["mean"]) / norm["std"]
    assert torch.allclose(Normalizer.from_state_dict(norm)(images), expected)


def test_the_channel_permutation_is_what_makes_it_exact(r20):
    """Their weights loaded by name alone (no permutation) compute something else."""
    net, _ = r20
    naive = create_model("resnet20")
    state = {k.replace("linear.", "fc."): v for k, v in net.state_dict().items()}
    naive.load_state_dict(state)
    x = torch.randn(4, 3, 32, 32)
    assert (_logits(naive, x) - _logits(net, x)).abs().max() > 1e-2


def test_cli_convert_then_every_command_takes_the_directory(r20, tmp_path):
    net, path = r20
    out = tmp_path / "converted"
    code, stdout, err = run_cli(
        ["convert", str(path), "--from", "akamaster", "--model", "resnet20", "--out", str(out)]
    )
    assert code == 0, err
    assert f"wrote {out / 'resnet20.safetensors'}" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["resnet20.json", "resnet20.safetensors"]
    meta = json.loads((out / "resnet20.json").read_text())
    assert meta["format"] == "resnetlab-export-1" and meta["normalizer"]["mode"] == "per-channel"
    assert meta["provenance"]["converted_from"] == "akamaster"
    assert meta["provenance"]["license"] == "BSD-2-Clause" and len(meta["provenance"]["source_sha256"]) == 64
    x = torch.randn(3, 3, 32, 32)
    for ref in (out, out / "resnet20.safetensors", str(out)):
        _assert_same(_logits(model_from_checkpoint(load_weights(ref)), x), _logits(net, x))
    _assert_same(_logits(create_model("resnet20", pretrained=out), x), _logits(net, x))
    _assert_same(_logits(create_model("resnet20", pretrained=str(out)), x), _logits(net, x))


@pytest.mark.slow
def test_round_trip_through_export_safetensors_and_onnx(r20, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net, path = r20
    converted = tmp_path / "converted"
    assert (
        run_cli(
            ["convert", str(path), "--from", "akamaster", "--model", "resnet20", "--out", str(converted)]
        )[0]
        == 0
    )
    model = create_model("resnet20", pretrained=converted)
    x = torch.randn(5, 3, 32, 32)
    expected = _logits(net, x)
    _assert_same(_logits(model, x), expected)
    again = tmp_path / "again" / "r20.safetensors"
    code, _, err = run_cli(["export", str(converted), "--format", "safetensors", "--out", str(again)])
    assert code == 0, err
    reloaded = load_weights(again)
    assert reloaded["provenance"]["converted_from"] == "akamaster"
    _assert_same(_logits(model_from_checkpoint(reloaded), x), expected)
    onnx_path = tmp_path / "r20.onnx"
    code, _, err = run_cli(["export", str(again), "--format", "onnx", "--out", str(onnx_path)])
    assert code == 0, err
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": x.numpy()})
    # onnxruntime computes in float32 with kernels of its own: float32's eps (1.2e-7) over the ~20
    # layers and sums of up to 576 terms of this net leaves about 1e-5 of the largest logit; 1e-4 of
    # it is the bound, while a wrong weight or layout moves the logits by far more (> 1e-2).
    error = (torch.from_numpy(logits).double() - expected).abs().max()
    assert error < 1e-4 * expected.abs().max()
    meta = json.loads(session.get_modelmeta().custom_metadata_map["resnetlab_config"])
    assert meta["normalizer"]["mode"] == "per-channel" and meta["classes"] == list(CIFAR10_CLASSES)


class _Payload:
    """Unpickling this would create ``marker``: a stand-in for code a malicious file would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _convert(src, model: str, out) -> tuple[int, str]:
    code, _, err = run_cli(["convert", str(src), "--from", "akamaster", "--model", model, "--out", str(out)])
    return code, err


def test_wrong_depth_is_one_line_naming_the_right_model(r20, tmp_path):
    _, path = r20
    code, err = _convert(path, "resnet56", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds akamaster's resnet20, not resnet56: pass --model resnet20" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("garbage", "is corrupt"),
        ("payload", "refusing to load"),
        ("legacy-payload", "refusing to load"),
        ("not-a-state-dict", "expected a dict with a 'state_dict' of tensors"),
        ("other-layout", "is not akamaster's resnet20 layout (unexpected fc.bias, fc.weight; missing linear"),
        ("wrong-shape", "linear.weight has shape (100, 64), but akamaster's resnet20 has (10, 64)"),
        ("missing", "does not exist"),
    ],
)
def test_unusable_files_are_one_line_exit_2(case, fragment, r20, tmp_path):
    net, _ = r20
    src = tmp_path / "src.th"
    marker = tmp_path / "payload-ran"
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    if case == "garbage":
        src.write_bytes(b"\x80\x02 definitely not a checkpoint" * 10)
    elif case.endswith("payload"):  # in the zip format and in the legacy one their files use
        zipped = case == "payload"
        torch.save({"state_dict": _Payload(str(marker))}, src, _use_new_zipfile_serialization=zipped)
    elif case == "not-a-state-dict":
        torch.save({"state_dict": [1, 2, 3], "best_prec1": 1.0}, src)
    elif case == "other-layout":  # our own names: not their layout
        torch.save({"state_dict": {k.replace("linear.", "fc."): v for k, v in state.items()}}, src)
    elif case == "wrong-shape":
        state["module.linear.weight"] = torch.zeros(100, 64)
        torch.save({"state_dict": state}, src)
    code, err = _convert(src, "resnet20", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_models_they_do_not_publish_are_refused(r20, tmp_path):
    _, path = r20
    code, err = _convert(path, "plain20", tmp_path / "out")
    assert code == 2 and "akamaster publishes resnet20" in err
    code, _, err = run_cli(["convert", str(path), "--from", "elsewhere", "--model", "resnet20", "--out", "x"])
    assert code == 2 and "invalid choice" in err


def test_a_bare_state_dict_without_prefixes_converts_too(r20, tmp_path):
    net, theirs = r20
    src = tmp_path / "bare.pt"
    torch.save(net.state_dict(), src)  # with num_batches_tracked, without "module."
    x = torch.randn(2, 3, 32, 32)
    _assert_same(_logits(model_from_checkpoint(convert_akamaster(src, "resnet20")), x), _logits(net, x))
    with pytest.raises(UserError, match="resnetlab convert"):
        load_weights(theirs)  # their file given where weights are expected says how to convert it
