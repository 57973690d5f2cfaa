"""`resnetlab export`: safetensors + config JSON that rebuild the net, and ONNX checked with onnxruntime."""

from __future__ import annotations

import json

import pytest
import torch

from cli_runner import one_line_error, run_cli
from resnetlab.engine import train
from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.models import ResNet, build_model
from resnetlab.weights.export import export_onnx, load_safetensors
from tiny import TINY_NET, synthetic_spec, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    net = TINY_NET | {"shortcut": "B"}
    out = tmp_path_factory.mktemp("run")
    return train(tiny_config(out, model_overrides=net, dataset=synthetic_spec(classes=7), iterations=4))


def test_safetensors_and_config_rebuild_the_network(run):
    code, out, err = run_cli(["export", str(run.out)])
    assert code == 0, err
    weights, config_path = run.out / "resnet20.safetensors", run.out / "resnet20.json"
    assert weights.is_file() and config_path.is_file() and str(weights) in out
    meta = json.loads(config_path.read_text())
    assert meta["classes"] == [f"class{i}" for i in range(7)] and meta["image_size"] == [8, 8]
    assert meta["model_config"]["shortcut"] == "B" and meta["model_config"]["num_classes"] == 7

    from safetensors.torch import load_file

    rebuilt = ResNet(**meta["model_config"])
    rebuilt.load_state_dict(load_file(weights))
    again = build_model(meta["model_name"], **meta["model_config"])
    again.load_state_dict(load_file(weights))
    reference = model_from_checkpoint(load_checkpoint(run.out))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = reference(x)
        assert torch.equal(rebuilt.eval()(x), expected) and torch.equal(again.eval()(x), expected)
    model, loaded_meta = load_safetensors(weights)
    assert loaded_meta == meta and torch.equal(model(x).detach(), expected)
    mean = torch.tensor(meta["normalizer"]["mean"])
    assert torch.equal(mean, load_checkpoint(run.out)["normalizer"]["mean"])


def test_export_to_a_chosen_path(run, tmp_path):
    target = tmp_path / "release" / "net.safetensors"
    code, _, err = run_cli(["export", str(run.out / "checkpoint.pt"), "--out", str(target)])
    assert code == 0, err
    assert target.is_file() and (tmp_path / "release" / "net.json").is_file()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["{missing}"], "does not exist"),
        (["{run}", "--format", "torchscript"], "invalid choice"),
        (["{run}", "--out", "{file}/net.safetensors"], "cannot"),
    ],
)
def test_export_bad_inputs(run, tmp_path, args, fragment):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    values = {"missing": tmp_path / "missing.pt", "run": run.out, "file": a_file}
    assert fragment in one_line_error(["export", *(a.format(**values) for a in args)])


@pytest.mark.slow
def test_onnx_matches_pytorch_with_onnxruntime(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    ckpt = load_checkpoint(run.out)
    path = export_onnx(ckpt, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    x = torch.randn(5, 3, 8, 8)  # another batch size than the export example: the batch is dynamic
    (logits,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = model_from_checkpoint(ckpt)(x).numpy()
    assert logits.shape == (5, 7)
    assert abs(logits - expected).max() < 1e-4
    meta = json.loads(session.get_modelmeta().custom_metadata_map["resnetlab_config"])
    assert meta["classes"] == ckpt["classes"]
