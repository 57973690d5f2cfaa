"""`resnetlab reproduce responses --nets`: Fig. 7 of given trained nets, each measured on the test
split with its own preprocessing; nothing trained. The nets are randomly initialised tiny ones
saved as checkpoints and exports, so no real weights and no training are needed."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from cli_runner import one_line_error, run_cli
from resnetlab.data.augment import Normalizer
from resnetlab.evaluation import evaluate_checkpoint
from resnetlab.experiments import responses_nets
from resnetlab.weights import load_weights
from resnetlab.weights.export import export_safetensors
from tiny import SMALL_DATA as DATA
from tiny_nets import ITERATIONS, checkpoint, count_measurements, net_entry, save_run

_ckpt = partial(checkpoint, data=DATA)  # 32 test images


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """plain-8 and ResNet-8 as run directories, ResNet-14 as an exported directory."""
    root = tmp_path_factory.mktemp("nets")
    save_run(_ckpt(1, False), root / "plain8")
    save_run(_ckpt(1, True), root / "resnet8")
    export_safetensors(_ckpt(2, True), root / "resnet14" / "resnet14.safetensors")
    return {name: root / name for name in ("plain8", "resnet8", "resnet14")}


def _responses(out: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(["reproduce", "responses", "--out", str(out), "--quiet", *args])


def test_nets_are_measured_reported_and_redrawn(nets: dict[str, Path], tmp_path: Path) -> None:
    refs = ",".join(str(nets[n]) for n in ("plain8", "resnet8", "resnet14"))
    code, printed, err = _responses(tmp_path, "--nets", refs)
    assert code == 0, err
    record = json.loads((tmp_path / "responses.json").read_text())
    assert not (tmp_path / "runs").exists()  # nothing trained
    measured = record["nets"]
    assert [n["label"] for n in measured] == ["plain-8", "ResNet-8", "ResNet-14"]
    assert [n["residual"] for n in measured] == [False, True, True]
    assert [n["depth"] for n in measured] == [8, 8, 14]
    for n, blocks in zip(measured, (3, 3, 6), strict=True):
        assert len(n["stds"]) == len(n["layers"]) == 1 + 2 * blocks  # stem + two per basic block
        assert all(s > 0 for s in n["stds"])
        assert n["images"] == 32 and n["dataset"] == DATA and 0 <= n["top1_error"] <= 1
        assert n["source"] == "resnetlab" and n["iterations"] == ITERATIONS
    assert measured[2]["ref"] == str(nets["resnet14"]) and measured[2]["origin"].endswith(
        "resnet14.safetensors"
    )

    verdicts = record["results"]["verdicts"]
    texts = [v["text"] for v in verdicts]
    assert len(verdicts) == 2
    assert "ResNet-8" in texts[0] and "plain-8" in texts[0] and "residual net" in texts[0]
    assert "ResNet-14" in texts[1] and "vs ResNet-8" in texts[1] and "deeper ResNet" in texts[1]
    for v in verdicts:
        assert v["mark"] in ("REPRODUCED", "NOT REPRODUCED")  # fully trained: never inconclusive
        assert f"{v['mark']}: {v['text']}" in printed
    figure = tmp_path / "figures" / "responses-fig7.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    md = (tmp_path / "report.md").read_text()
    assert "test error" in md and "Where the weights came from" in md and "FAR below" not in md
    error = f"{100 * measured[0]['top1_error']:.2f}%"
    assert any(row[0] == "plain-8" and row[2] == error for row in record["results"]["tables"][0]["rows"])

    figure.unlink()
    code, again, err = run_cli(["report", str(tmp_path)])
    assert code == 0, err
    assert figure.is_file()
    assert all(f"{v['mark']}: {v['text']}" in again for v in verdicts)


def test_each_net_is_measured_with_its_own_preprocessing(tmp_path: Path) -> None:
    """The same weights under two normalisers respond differently; a given --dataset is used."""
    per_channel = Normalizer(torch.full((3, 1, 1), 0.2), torch.full((3, 1, 1), 0.1), "per-channel")
    save_run(_ckpt(1, True), tmp_path / "a")
    save_run(_ckpt(1, True, normalizer=per_channel), tmp_path / "b")
    refs = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    code, _, err = _responses(tmp_path / "out", "--nets", refs, "--dataset", "synthetic:64,16,8,10")
    assert code == 0, err
    a, b = json.loads((tmp_path / "out" / "responses.json").read_text())["nets"]
    assert (a["normalization"], b["normalization"]) == ("per-pixel", "per-channel")
    assert a["images"] == b["images"] == 16
    assert (a["label"], b["label"]) == ("ResNet-8 #1", "ResNet-8 #2")
    assert a["stds"][0] != pytest.approx(b["stds"][0], rel=0.05)


def test_the_error_from_the_same_pass_equals_eval(nets: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = _responses(tmp_path, "--nets", str(nets["resnet14"]))
    assert code == 0, err
    measured = json.loads((tmp_path / "responses.json").read_text())["nets"][0]
    expected = evaluate_checkpoint(load_weights(str(nets["resnet14"])), device="cpu").result["top1_error"]
    assert measured["top1_error"] == pytest.approx(expected)


def test_a_rerun_reuses_both_nets_measurements_and_its_report_says_so(
    nets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = count_measurements(monkeypatch, responses_nets)
    refs = f"{nets['plain8']},{nets['resnet8']}"
    assert _responses(tmp_path, "--nets", refs, "--precision", "fp32")[0] == 0
    first = json.loads((tmp_path / "responses.json").read_text())["nets"]
    code, printed, err = _responses(tmp_path, "--nets", refs, "--precision", "fp32")
    assert code == 0, err
    assert measured == ["plain-8", "ResNet-8"]  # neither net measured twice
    record = json.loads((tmp_path / "responses.json").read_text())
    assert all(n["reused"] for n in record["nets"])
    assert [n["stds"] for n in record["nets"]] == [n["stds"] for n in first]
    assert all(f"{v['mark']}: {v['text']}" in printed for v in record["results"]["verdicts"])
    wall = next(line for line in (tmp_path / "report.md").read_text().splitlines() if "wall time" in line)
    assert "measured earlier and reused: plain-8 (measured" in wall and "ResNet-8 (measured" in wall
    # another numeric mode or image count is another measurement
    assert _responses(tmp_path, "--nets", refs, "--precision", "bf16")[0] == 0
    assert json.loads((tmp_path / "responses.json").read_text())["precision"] == "bf16"
    assert _responses(tmp_path, "--nets", refs, "--precision", "fp32", "--test-images", "10")[0] == 0
    assert measured == ["plain-8", "ResNet-8"] * 3


def test_test_images_limits_the_measurement(nets: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = _responses(tmp_path, "--nets", str(nets["resnet8"]), "--test-images", "10")
    assert code == 0, err
    record = json.loads((tmp_path / "responses.json").read_text())
    assert record["nets"][0]["images"] == 10
    assert record["results"]["verdicts"][0]["mark"] == "INCONCLUSIVE"  # one net: nothing to compare


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--nets", "{tmp}/missing"], "does not exist"),
        (["--nets", "{tmp}"], "neither a checkpoint.pt"),
        (["--nets", "pretrained:resnet20:nosuchtag"], "no resnet20 weights tagged"),
        (["--nets", " , "], "--nets needs"),
        (["--nets", "{resnet8}", "--budget-iterations", "5"], "--budget-iterations does not apply"),
        (["--nets", "{resnet8}", "--depths", "8"], "not allowed with"),
        (["--nets", "{resnet8}", "--dataset", "synthetic:64,32,8,5"], "classes"),
        (["--nets", "{resnet8}", "--dataset", "synthetic:64,32,16,10"], "expects (8, 8)"),
        (["--nets", "{preact}"], "post-activation"),
    ],
)
def test_bad_nets_are_one_line_errors(
    nets: dict[str, Path], tmp_path: Path, args: list[str], fragment: str
) -> None:
    save_run(_ckpt(1, True, preact=True), tmp_path / "preact")
    values = {"tmp": tmp_path, "resnet8": nets["resnet8"], "preact": tmp_path / "preact"}
    args = [a.format(**values) for a in args]
    err = one_line_error(["reproduce", "responses", "--out", str(tmp_path / "out"), "--quiet", *args])
    assert fragment in err, err


def _net(label: str, depth: int, residual: bool, std: float, source: str = "resnetlab") -> dict:
    return net_entry(label, depth, residual, source, stds=[std])


def test_verdicts_compare_nets_trained_alike_and_never_excuse_a_short_budget() -> None:
    nets = [
        _net("plain-20", 20, False, 1.0),
        _net("ResNet-20", 20, True, 0.8),
        _net("ResNet-56", 56, True, 0.79),  # a near tie: not reproduced, not inconclusive
        _net("ResNet-20 (akamaster)", 20, True, 0.9, "akamaster"),
        _net("ResNet-32 (akamaster)", 32, True, 0.7, "akamaster"),
        _net("ResNet-44 (akamaster)", 44, True, 0.6, "akamaster"),
    ]
    got = [(v.holds, v.text) for v in responses_nets.verdicts(nets)]
    assert len(got) == 5  # 1 plain/ResNet pair + 1 ResNet pair here, 3 pairs of akamaster's
    assert got[0][0] is True and "ResNet-20 0.800 vs plain-20 1.000" in got[0][1]
    assert got[1][0] is False and "ResNet-56 0.790 vs ResNet-20 0.800" in got[1][1]
    assert all(holds is True for holds, _ in got[2:])
    assert "ResNet-44 (akamaster) 0.600 vs ResNet-20 (akamaster) 0.900" in "".join(t for _, t in got)
    assert not any("plain-20" in t and "akamaster" in t for _, t in got)  # other sources: not compared
