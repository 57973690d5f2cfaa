"""`resnetlab reproduce lesion`: deleting blocks of trained nets at test time (Veit et al. 2016).

The mistakes these catch: a deleted residual block that loses its shortcut too (or its option-A
zero-padding and subsampling), a plain block "deleted" where the shape changes, deletion sets
evaluated from the wrong cached input, unseeded or repeated random draws."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cli_runner import one_line_error, run_cli
from resnetlab.analysis.lesion import (
    Deleted,
    block_sites,
    deleted_blocks,
    lesion_errors,
    lesioned_logits,
)
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.experiments import lesion, lesion_verdicts, net_measurements
from resnetlab.experiments.trained_nets import TrainedNet
from resnetlab.models.blocks import ZeroPadShortcut
from tiny_nets import DATA, checkpoint, count_measurements, net_entry, tiny_net, twin_runs


def _zero_residual_branch(model: torch.nn.Module, index: int) -> torch.nn.Module:
    """An independent way to delete block ``index`` of a residual net: make F(x) = 0 by zeroing the
    block's last BN (gamma and beta), keeping the shortcut and the final ReLU."""
    block = list(model.blocks())[index - 1]
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    return model


def test_a_deleted_residual_block_keeps_its_shortcut() -> None:
    x = torch.randn(6, 3, 8, 8)
    model = tiny_net(2, residual=True)
    sites = block_sites(model)
    assert [s.shape_changes for s in sites] == [False, False, True, False, True, False]
    assert all(s.deletable for s in sites)
    for site in sites:
        reference = _zero_residual_branch(tiny_net(2, residual=True), site.index)
        with torch.no_grad(), deleted_blocks(model, [site.index]):
            got = model(x)
        assert torch.allclose(got, reference(x), atol=1e-6), site
    # the block itself: identity blocks pass x, downsampling ones option A's subsampled, padded x
    blocks = list(model.blocks())
    h = torch.relu(torch.randn(2, 4, 8, 8))
    assert torch.equal(Deleted(blocks[1])(h), h)
    down = blocks[2]
    assert isinstance(down.downsample, ZeroPadShortcut)
    out = Deleted(down)(h)
    assert out.shape == (2, 8, 4, 4)
    assert torch.equal(out[:, :4], h[:, :, ::2, ::2]) and not out[:, 4:].any()
    assert list(model.blocks())[2] is down  # the context put every block back


def test_plain_blocks_become_the_identity_only_where_the_shape_allows() -> None:
    model = tiny_net(2, residual=False)
    sites = block_sites(model)
    assert [s.deletable for s in sites] == [True, True, False, True, False, True]
    blocks = list(model.blocks())
    h = torch.relu(torch.randn(2, 4, 8, 8))
    assert torch.equal(Deleted(blocks[0])(h), h)
    with pytest.raises(ValueError, match="changes the shape"):
        Deleted(blocks[2])
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))]
    with pytest.raises(ValueError, match="cannot be deleted"):
        lesion_errors(model, batches, [(3,)])


@pytest.mark.parametrize("residual", [True, False])
def test_every_deletion_set_equals_the_whole_net_run_without_those_blocks(residual: bool) -> None:
    """The shared prefix (each set starts from the intact net's input of its first deleted block) must
    give what a full forward pass of the lesioned net gives."""
    torch.manual_seed(1)
    model = tiny_net(2, residual=residual, seed=3)
    x = torch.randn(16, 3, 8, 8)
    keep = [s.index for s in block_sites(model) if s.deletable]
    sets = [(i,) for i in keep] + [tuple(keep[:2]), tuple(keep[1::2]), tuple(keep)]
    got = lesioned_logits(model, x, sets)
    with torch.no_grad():
        assert torch.equal(got[0], model(x))
        for chosen, logits in zip(sets, got[1:], strict=True):
            with deleted_blocks(model, chosen):
                assert torch.allclose(logits, model(x), atol=1e-6), chosen
    assert not torch.allclose(got[1], got[2])  # the sets really differ

    # the errors are those logits' errors, ``limit`` cuts the second batch short
    batches = [(x[:10], torch.arange(10) % 10), (x[10:], torch.arange(6) % 10)]
    errors = lesion_errors(model, batches, sets, limit=13)
    labels = torch.arange(16)[:13] % 10
    z = lesioned_logits(model, x[:13], sets)
    assert errors.images == 13
    assert [errors.intact, *errors.deleted] == pytest.approx(
        [float((logits.argmax(1) != labels).double().mean()) for logits in z]
    )


def test_random_deletion_sets_are_seeded_distinct_and_keep_the_shape() -> None:
    sites = block_sites(tiny_net(3, residual=True))  # 9 blocks, 7 keep the shape
    keep = {s.index for s in sites if not s.shape_changes}
    sets = lesion.deletion_sets(sites, draws=5, seed=0)
    assert sorted(sets) == list(range(2, 8))
    for k, chosen in sets.items():
        assert len(chosen) == min(5, math.comb(7, k)) and len(set(chosen)) == len(chosen)
        assert all(len(s) == k and set(s) <= keep for s in chosen)
    assert sets == lesion.deletion_sets(sites, draws=5, seed=0)
    assert sets != lesion.deletion_sets(sites, draws=5, seed=1)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return twin_runs(tmp_path_factory.mktemp("nets"))


def test_lesion_cli_measures_reports_and_redraws(nets: dict[str, Path], tmp_path: Path) -> None:
    refs = ",".join(str(nets[n]) for n in ("plain14", "resnet14", "resnet20"))
    args = ["reproduce", "lesion", "--nets", refs, "--out", str(tmp_path), "--quiet", "--eval-limit", "40"]
    code, printed, err = run_cli([*args, "--draws", "3", "--precision", "bf16"])
    assert code == 0, err
    record = json.loads((tmp_path / "lesion.json").read_text())
    assert record["precision"] == "bf16"  # the deletions in bf16, the intact nets again in fp32
    assert all(abs(n["intact_error_fp32"] - n["intact_error"]) < 0.1 for n in record["nets"])
    plain, res14, res20 = record["nets"]
    assert [n["label"] for n in record["nets"]] == ["plain-14", "ResNet-14", "ResNet-20"]
    assert plain["images"] == 40 and plain["dataset"] == DATA
    assert [b["deletable"] for b in plain["blocks"]] == [True, True, False, True, False, True]
    assert plain["blocks"][2]["error"] is None and res14["blocks"][2]["error"] is not None
    # k = 1 .. 4 over the 4 shape-keeping blocks; the twins lose the very same sets
    assert [c["k"] for c in res14["k_curve"]] == [1, 2, 3, 4]
    assert [c["sets"] for c in plain["k_curve"]] == [c["sets"] for c in res14["k_curve"]]
    assert [len(c["sets"]) for c in res20["k_curve"]] == [7, 3, 3, 3, 3, 3, 1]
    texts = [v["text"] for v in record["results"]["verdicts"]]
    assert any("ResNet-14" in t and "plain-14" in t for t in texts)
    assert any("ResNet-20" in t and "deeper ResNet" in t for t in texts)
    assert all(f"{v['mark']}: {v['text']}" in printed for v in record["results"]["verdicts"])
    assert record["wall_time_s"] > 0 and "wall time" in (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "Veit et al. (2016) beside ours" in html and "data:image/png;base64" in html
    figs = [tmp_path / "figures" / f for f in ("lesion-blocks.png", "lesion-k.png")]
    for f in figs:
        f.unlink()
    code, again, err = run_cli(["report", str(tmp_path)])
    assert code == 0, err
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in figs)
    assert "== lesion" in again


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "required: --nets"),
        (["--nets", " , "], "--nets needs"),
        (["--nets", "pretrained:resnet20:nosuchtag"], "no resnet20 weights tagged"),
        (["--nets", "{resnet14}", "--draws", "0"], "positive integer"),
        (["--nets", "{resnet14}", "--eval-limit", "0"], "positive integer"),
        (["--nets", "{resnet14}", "--dataset", "synthetic:64,32,16,10"], "expects (8, 8)"),
    ],
)
def test_bad_lesion_arguments_are_one_line_errors(
    nets: dict[str, Path], tmp_path: Path, args: list[str], fragment: str
) -> None:
    args = [a.format(resnet14=nets["resnet14"]) for a in args]
    err = one_line_error(["reproduce", "lesion", "--out", str(tmp_path), *args])
    assert fragment in err, err


def _entry(
    label: str, depth: int, residual: bool, intact: float, keep: float, down: float, curve: list
) -> dict:
    blocks = [
        {"index": i, "name": "", "shape_changes": i in (4, 7), "deletable": residual or i not in (4, 7)}
        for i in range(1, 10)
    ]
    for b in blocks:
        b["error"] = None if not b["deletable"] else (down if b["shape_changes"] else keep)
    k_curve = [{"k": k, "sets": [], "errors": [e]} for k, e in enumerate(curve, 1)]
    return net_entry(label, depth, residual, classes=10, intact_error=intact, blocks=blocks, k_curve=k_curve)


def test_verdicts_judge_each_resnet_against_its_plain_twin() -> None:
    smooth = [0.12, 0.15, 0.2, 0.26, 0.33, 0.4, 0.48]
    jump = [0.85, 0.88, 0.89, 0.9, 0.9, 0.9, 0.9]
    nets = [
        _entry("plain-20", 20, False, 0.1, 0.85, 0.0, jump),
        _entry("ResNet-20", 20, True, 0.09, 0.12, 0.5, smooth),
    ]
    got = lesion_verdicts.verdicts(nets)
    assert [v.holds for v in got] == [True, True, True, True], [v.text for v in got]
    # a ResNet that breaks like its twin fails the comparison and the smoothness test
    nets[1] = _entry("ResNet-20", 20, True, 0.09, 0.7, 0.8, [0.7, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    holds = [v.holds for v in lesion_verdicts.verdicts(nets)]
    assert holds == [False, True, True, False]


def test_a_rerun_measures_only_the_nets_it_has_not_measured_with_these_settings(
    nets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = count_measurements(monkeypatch, lesion)
    base = ["reproduce", "lesion", "--out", str(tmp_path), "--quiet", "--eval-limit", "40", "--draws", "2"]
    plain, res = str(nets["plain14"]), str(nets["resnet14"])
    assert run_cli([*base, "--nets", plain])[0] == 0
    alone = json.loads((tmp_path / "lesion.json").read_text())["nets"][0]
    assert run_cli([*base, "--nets", f"{plain},{res}"])[0] == 0
    assert measured == ["plain-14", "ResNet-14"]  # plain-14 was not measured twice
    record = json.loads((tmp_path / "lesion.json").read_text())
    kept = record["nets"][0]
    assert kept["reused"] and "reused" not in record["nets"][1]
    assert kept["blocks"] == alone["blocks"] and kept["k_curve"] == alone["k_curve"]
    assert "measured earlier and reused: plain-14" in (tmp_path / "report.md").read_text()
    # other settings are other measurements
    assert run_cli([*base[:-1], "3", "--nets", f"{plain},{res}"])[0] == 0
    assert measured == ["plain-14", "ResNet-14", "plain-14", "ResNet-14"]
    # a kept file that is corrupt is measured again, not trusted and not an error
    for f in (tmp_path / "lesion-nets").iterdir():
        f.write_text("{not json")
    assert run_cli([*base, "--nets", plain])[0] == 0
    assert measured[-1] == "plain-14"


def test_the_net_hash_sees_architecture_normalisation_and_every_tensor() -> None:
    def loaded(ckpt: dict) -> TrainedNet:
        return TrainedNet({}, ckpt, model_from_checkpoint(ckpt))

    res = loaded(checkpoint(2, True))
    before = net_measurements.net_sha256(res)
    assert net_measurements.net_sha256(loaded(checkpoint(2, True))) == before
    plain = loaded(checkpoint(2, False))  # the very same tensors, without the shortcuts
    tensors = plain.model.state_dict(), res.model.state_dict()
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(t, tensors[1][name]) for name, t in tensors[0].items())
    assert net_measurements.net_sha256(plain) != before
    other = checkpoint(2, True)
    other["normalizer"]["mean"] = other["normalizer"]["mean"] + 0.01
    assert net_measurements.net_sha256(loaded(other)) != before
    with torch.no_grad():
        res.model.bn1.running_mean[0] += 1e-6  # a buffer, not a parameter
    assert net_measurements.net_sha256(res) != before
