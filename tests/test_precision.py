"""The numeric mode: auto picks bf16 + channels_last exactly where the device computes bf16 natively,
explicit flags win, the choice and its reason are recorded, and a resumed run keeps it. The CPU's
features are faked, so both branches run on every machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cli_runner import run_cli
from resnetlab.engine import precision
from resnetlab.engine.config import TrainConfig, resolve_mode
from resnetlab.engine.evaluate import FlipViews, evaluate
from resnetlab.engine.trainer import train
from resnetlab.errors import UserError
from resnetlab.models import build_model
from resnetlab.recipes import get_recipe
from tiny import SMALL_DATA, TINY_NET, interrupt_after, tiny_config

CPU = torch.device("cpu")
TINY_ARGS = [
    *("--model", "resnet20", "--dataset", SMALL_DATA),
    *("--iterations", "2", "--batch-size", "16", "--quiet"),
]


def fake_cpu(monkeypatch: pytest.MonkeyPatch, *, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "fp32")],
)
def test_auto_picks_bf16_only_where_the_cpu_has_it(monkeypatch, amx, avx512_bf16, expected) -> None:
    fake_cpu(monkeypatch, amx=amx, avx512_bf16=avx512_bf16)
    mode = precision.choose_mode(CPU)
    layout = "channels_last" if expected == "bf16" else "contiguous"
    assert (mode.precision, mode.memory_format) == (expected, layout)
    assert mode.reason.startswith("auto: ")
    if expected == "bf16":
        assert ("AMX" in mode.reason) == amx and ("AVX512-BF16" in mode.reason) == avx512_bf16
    else:
        assert "neither AMX nor AVX512-BF16" in mode.reason


def test_a_torch_without_the_probes_counts_as_no_native_bf16(monkeypatch) -> None:
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert precision.choose_mode(CPU).precision == "fp32"


def test_explicit_choices_win(monkeypatch) -> None:
    fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
    mode = precision.choose_mode(CPU, "fp32", "contiguous")
    assert (mode.precision, mode.memory_format, mode.amp, mode.channels_last) == (
        "fp32",
        "contiguous",
        None,
        False,
    )
    fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
    assert precision.choose_mode(CPU, "bf16").amp == "bf16"  # emulated, slow, but asked for


def test_bf16_is_refused_where_autocast_cannot_run() -> None:
    with pytest.raises(UserError, match="--precision bf16 is not supported"):
        precision.choose_mode(torch.device("mps"), "bf16")
    assert precision.choose_mode(torch.device("mps")).memory_format == "contiguous"


def test_an_unresolved_config_has_no_amp_yet() -> None:
    config = TrainConfig(model="resnet20", dataset="synthetic")
    with pytest.raises(ValueError, match="not chosen yet"):
        _ = config.amp
    resolved = resolve_mode(config, CPU)
    assert resolved.precision in ("fp32", "bf16") and resolved.mode_reason


def test_old_configs_map_amp_and_channels_last_to_the_new_fields() -> None:
    old = TrainConfig(model="resnet20", dataset="synthetic").to_dict()
    del old["precision"], old["memory_format"], old["mode_reason"]
    old |= {"amp": "bf16", "channels_last": False}
    config = TrainConfig.from_dict(old)
    assert (config.precision, config.memory_format) == ("bf16", "contiguous")
    old |= {"amp": None, "channels_last": True}
    assert TrainConfig.from_dict(old).precision == "fp32"


def test_the_run_records_and_prints_its_mode(tmp_path: Path, monkeypatch) -> None:
    fake_cpu(monkeypatch, amx=False, avx512_bf16=True)
    out = tmp_path / "run"
    args = [a for a in TINY_ARGS if a != "--quiet"]
    code, stdout, _ = run_cli(["train", *args, "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert stdout.splitlines()[0] == ("precision bf16, channels_last (auto: this CPU has AVX512-BF16)")
    config = yaml.safe_load((out / "config.yaml").read_text())
    summary = json.loads((out / "summary.json").read_text())
    for record in (config, summary):
        assert (record["precision"], record["memory_format"]) == ("bf16", "channels_last")
        assert record["mode_reason"] == "auto: this CPU has AVX512-BF16"


def test_resume_keeps_the_mode_of_the_run_it_resumes(tmp_path: Path, monkeypatch) -> None:
    """Started where auto chose bf16, resumed where auto would choose fp32: it stays bf16."""
    fake_cpu(monkeypatch, amx=True, avx512_bf16=False)
    out = tmp_path / "run"
    recipe = get_recipe("cifar-paper", batch_size=16)
    config = tiny_config(
        out, dataset=SMALL_DATA, recipe=recipe, iterations=4, checkpoint_every=2, device="cpu"
    )
    interrupt_after(config, 3)
    fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
    summary = train(
        TrainConfig(model=None, dataset=None, out=out, resume=out, device="cpu", quiet=True)
    ).summary
    assert summary["precision"] == "bf16" and summary["mode_reason"] == "auto: this CPU has AMX"


def test_cli_flags_and_their_old_aliases(tmp_path: Path) -> None:
    code, _, err = run_cli(
        ["train", *TINY_ARGS, "--precision", "fp32", "--amp", "bf16", "--out", str(tmp_path)]
    )
    assert code == 2 and err.strip().endswith("--precision fp32 contradicts --amp bf16: give one of them")
    out = tmp_path / "aliases"
    code, _, _ = run_cli(["train", *TINY_ARGS, "--amp", "bf16", "--channels-last", "--out", str(out)])
    assert code == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["precision"], config["memory_format"]) == ("bf16", "channels_last")
    code, _, err = run_cli(["train", "--resume", str(out), "--precision", "fp32"])
    assert code == 2 and "--precision cannot be changed when resuming" in err


def test_flip_views_average_an_image_and_its_mirror() -> None:
    """With the mirror as a second view, the scores are the two views' probabilities averaged
    (checked against a direct computation, and told apart from the single view's)."""
    torch.manual_seed(0)
    net = build_model("resnet20", **TINY_NET).eval()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    flipped = evaluate(net, FlipViews([(x, y)]), CPU, 10)
    with torch.no_grad():
        probs = (net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2
    expected = torch.nn.functional.nll_loss(probs.log(), y).item()
    assert flipped["loss"] == pytest.approx(expected, rel=1e-5)
    plain = evaluate(net, [(x, y)], CPU, 10)
    assert plain["loss"] != pytest.approx(expected, rel=1e-3)


def meta(name: str, **overrides) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(name, **overrides)


@pytest.mark.parametrize(
    ("name", "overrides", "layout"),
    [
        ("resnet20", {}, "channels_last"),  # option A: no 1x1 convolution at all
        ("resnet110", {}, "channels_last"),
        ("plain20", {}, "channels_last"),
        ("resnet20", {"shortcut": "B"}, "contiguous"),  # 1x1 stride-2 projections where the shape changes
        ("resnet20", {"shortcut": "C"}, "contiguous"),
        ("resnet18", {}, "contiguous"),  # ImageNet: option B projections
        ("resnet50", {}, "contiguous"),
    ],
)
def test_auto_layout_in_fp32_on_a_cpu_follows_the_nets_strided_1x1_convolutions(
    name, overrides, layout
) -> None:
    mode = precision.choose_mode(CPU, model=meta(name, **overrides))
    assert (mode.precision, mode.memory_format) == ("fp32", layout)
    if layout == "channels_last":
        assert precision.strided_1x1_convs(meta(name, **overrides)) == []
        assert "no strided 1x1 convolution" in mode.reason
    else:
        first = precision.strided_1x1_convs(meta(name, **overrides))[0]
        assert f"strided 1x1 convolutions ({first}" in mode.reason


def test_strided_1x1_convs_finds_exactly_the_1x1_convolutions_with_a_stride() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1, stride=2),  # found
        torch.nn.Conv2d(4, 4, 3, stride=2),  # strided, but 3x3
        torch.nn.Conv2d(4, 4, 1),  # 1x1, no stride
        torch.nn.Conv2d(4, 4, 1, stride=(1, 2)),  # found: a stride in one direction
    )
    assert precision.strided_1x1_convs(net) == ["0", "3"]


def test_the_layout_rule_leaves_bf16_cuda_and_explicit_layouts_alone(monkeypatch) -> None:
    option_b = meta("resnet20", shortcut="B")
    assert precision.choose_mode(CPU).memory_format == "contiguous"  # a net not given: not inspected
    assert precision.choose_mode(CPU, "fp32", "channels_last", option_b).memory_format == "channels_last"
    assert precision.choose_mode(CPU, "fp32", "contiguous", meta("resnet20")).memory_format == "contiguous"
    fake_cpu(monkeypatch, amx=True, avx512_bf16=False)
    assert precision.choose_mode(CPU, model=option_b).memory_format == "channels_last"


@pytest.mark.parametrize(("shortcut", "layout"), [("A", "channels_last"), ("B", "contiguous")])
def test_a_run_takes_its_nets_layout_and_says_why_first(tmp_path: Path, capsys, shortcut, layout) -> None:
    out = tmp_path / "run"
    net = TINY_NET | {"shortcut": shortcut}
    train(tiny_config(out, model_overrides=net, dataset=SMALL_DATA, iterations=2, device="cpu", quiet=False))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"precision fp32, {layout} (auto: this CPU has neither AMX nor AVX512-BF16")
    assert ("no strided 1x1 convolution" in first) == (shortcut == "A")
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["memory_format"] == layout and recorded["mode_reason"] in first


def test_resume_keeps_the_layout_the_run_started_with(tmp_path: Path, monkeypatch) -> None:
    """Started with auto's channels_last; resumed where the rule would say contiguous (a later
    rule, another machine): the run stays channels_last and ends as an uninterrupted run ends."""
    recipe = get_recipe("cifar-paper", batch_size=16)
    settings = {
        "dataset": SMALL_DATA,
        "recipe": recipe,
        "iterations": 6,
        "checkpoint_every": 2,
        "device": "cpu",
    }
    reference = train(tiny_config(tmp_path / "reference", **settings))
    out = tmp_path / "run"
    interrupt_after(tiny_config(out, **settings), 3)
    monkeypatch.setattr(precision, "_cpu_fp32_layout", lambda model: ("contiguous", "a changed rule"))
    resumed = train(TrainConfig(model=None, dataset=None, out=out, resume=out, device="cpu", quiet=True))
    assert reference.summary["memory_format"] == resumed.summary["memory_format"] == "channels_last"
    assert "no strided 1x1 convolution" in resumed.summary["mode_reason"]
    assert yaml.safe_load((out / "config.yaml").read_text())["memory_format"] == "channels_last"
    ours, theirs = resumed.model.state_dict(), reference.model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
