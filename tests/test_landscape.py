"""`resnetlab reproduce landscape`: filter-normalised loss surfaces and the Hessian's extremes
(Li et al. 2018).

The mistakes these catch: a direction normalised per layer (or not at all) instead of per filter,
BN directions that move BN parameters, BN running statistics that drift during a scan (train mode),
weights not restored after a scan, and Hessian eigenvalue estimates that are wrong, including a
negative lambda_min; off the centre, a Hessian measured at the wrong point of the line, a centre
measured twice (or differently), weights left moved, and a verdict along the line that reads the
wrong number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_runner import one_line_error, run_cli
from resnetlab.analysis.landscape import (
    evaluate_loss,
    filter_normalized_direction,
    hessian_extremes,
    hessian_line,
    hessian_operator,
    lanczos,
    scan,
)
from resnetlab.data import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import seeded_generator
from resnetlab.experiments import landscape, landscape_verdicts
from tiny_nets import DATA as TINY_DATA
from tiny_nets import count_measurements, net_entry, tiny_net, twin_runs


def _filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def test_directions_are_normalised_filter_by_filter() -> None:
    model = tiny_net(2, residual=True)
    with torch.no_grad():  # filters of very different norms: a per-layer scale cannot match them all
        model.conv1.weight.mul_(torch.logspace(-2, 2, 4).view(4, 1, 1, 1))
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    assert d.keys() == dict(model.named_parameters()).keys()
    for name, w in model.named_parameters():
        if w.dim() <= 1:  # BN weights and biases, the fc bias: left where they are
            assert not d[name].any(), name
        else:
            assert torch.allclose(_filter_norms(d[name]), _filter_norms(w.detach()), rtol=1e-5), name
            assert not torch.allclose(d[name], w.detach())
    again = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    other = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    assert all(torch.equal(d[k], again[k]) for k in d)
    assert not torch.equal(d["fc.weight"], other["fc.weight"])


def test_a_scan_uses_running_statistics_and_changes_nothing() -> None:
    model = tiny_net(2, residual=True).train()  # a caller that forgot eval(): the scan must not care
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))) for _ in range(2)]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    d = [filter_normalized_direction(model, torch.Generator().manual_seed(s)) for s in (0, 1)]
    points = scan(model, d, [(0.0, 0.0), (0.5, -0.5), (1.0, 1.0)], batches)
    assert model.training  # left in the mode it came in
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # BN buffers included
    centre = evaluate_loss(model.eval(), batches)
    assert points[0].loss == pytest.approx(centre.loss, rel=1e-6)
    assert points[1].loss != pytest.approx(centre.loss, rel=1e-3)
    # the point (0.5, -0.5) is the net with w + 0.5 d0 - 0.5 d1, built here by hand and scored with
    # cross_entropy over all 16 images: a sign, scale or direction mix-up would miss it
    moved = tiny_net(2, residual=True)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.copy_(weights[name] + 0.5 * d[0][name] - 0.5 * d[1][name])
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = moved.eval()(x)
    assert points[1].loss == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
    assert points[1].accuracy == float((logits.argmax(1) == y).float().mean())
    with torch.no_grad():  # and it is the eval-mode loss, not the batch-statistics one
        train_loss = nn.functional.cross_entropy(model.train()(batches[0][0]), batches[0][1])
    assert float(train_loss) != pytest.approx(centre.loss, rel=1e-3)


def test_a_bf16_scan_stays_close_to_fp32() -> None:
    model = tiny_net(2, residual=False)
    batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,)))]
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    fp32, bf16 = (scan(model, [d], [(0.0,), (0.3,)], batches, autocast=a) for a in (False, True))
    assert [p.loss for p in bf16] == pytest.approx([p.loss for p in fp32], rel=0.05)


class _Drifting(nn.Module):
    """A layer whose statistics move on every forward pass, eval mode or not (a BN left training)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 10)
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        return self.lin(x.flatten(1)[:, :12])


def test_a_scan_that_moves_statistics_is_refused() -> None:
    model = _Drifting()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="statistics changed"):
        scan(model, [d], [(0.0,), (1.0,)], [(torch.randn(4, 3, 2, 2), torch.randint(0, 10, (4,)))])


def _symmetric(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(
            len(eigenvalues),
            len(eigenvalues),
            generator=torch.Generator().manual_seed(seed),
            dtype=torch.float64,
        )
    )
    return q @ torch.diag(eigenvalues) @ q.T


def test_lanczos_finds_known_extremes_including_a_negative_one() -> None:
    eigenvalues = torch.cat([torch.tensor([-3.0, 9.0]), torch.linspace(-0.5, 2.0, 58)]).double()
    a = _symmetric(eigenvalues)
    gen = torch.Generator().manual_seed(0)
    exact = lanczos(lambda v: a @ v, 60, 60, gen)  # the whole space: exact
    assert exact.lambda_max == pytest.approx(9.0, abs=1e-9) and exact.lambda_min == pytest.approx(
        -3.0, abs=1e-9
    )
    assert exact.ratio == pytest.approx(1 / 3)
    few = lanczos(lambda v: a @ v, 60, 25, torch.Generator().manual_seed(1))  # well separated: fast
    assert few.steps == 25
    assert few.lambda_max == pytest.approx(9.0, abs=1e-6) and few.lambda_min == pytest.approx(-3.0, abs=1e-6)
    assert few.residual_max < 1e-4
    # the Ritz values never pass the true extremes, converged or not
    early = lanczos(lambda v: a @ v, 60, 3, torch.Generator().manual_seed(2))
    assert early.lambda_min >= -3.0 and early.lambda_max <= 9.0


def test_the_hessian_of_a_quadratic_through_autograd() -> None:
    """Loss 1/2 w'Aw + b'w split into two terms: the operator must be exactly A."""
    eigenvalues = torch.tensor([-1.5, -0.2, 0.1, 0.4, 0.7, 1.0, 2.5, 4.0])
    a = _symmetric(eigenvalues.double()).float()
    w = nn.Parameter(torch.randn(4, 2))  # a matrix-shaped parameter: flattening must line up
    b = torch.randn(8)

    def terms():
        flat = w.flatten()
        yield 0.25 * flat @ a @ flat + b @ flat
        yield 0.25 * flat @ a @ flat

    matvec = hessian_operator(terms, [w])
    v = torch.randn(8, dtype=torch.float64)
    assert torch.allclose(matvec(v), a.double() @ v, atol=1e-5)
    got = lanczos(matvec, 8, 8, torch.Generator().manual_seed(0))
    assert got.lambda_min == pytest.approx(-1.5, abs=1e-5) and got.lambda_max == pytest.approx(4.0, abs=1e-5)


def test_hessian_extremes_of_a_net_match_the_dense_hessian() -> None:
    torch.manual_seed(0)
    model = tiny_net(1, residual=True, widths=[2, 2, 2]).train()
    batches = [(torch.randn(6, 3, 4, 4), torch.randint(0, 10, (6,))) for _ in range(2)]
    params = dict(model.named_parameters())
    names = list(params)
    model.eval()

    def loss(*flat: torch.Tensor) -> torch.Tensor:
        values = dict(zip(names, flat, strict=True))
        total = sum(
            nn.functional.cross_entropy(torch.func.functional_call(model, values, (x,)), y, reduction="sum")
            for x, y in batches
        )
        return total / 12

    blocks = torch.autograd.functional.hessian(loss, tuple(p.detach() for p in params.values()))
    sizes = [p.numel() for p in params.values()]
    dense = torch.cat(
        [
            torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(sizes))], 1)
            for i in range(len(sizes))
        ]
    )
    eigenvalues = torch.linalg.eigvalsh(dense.double())
    model.train()
    # a ReLU net's Hessian has low rank here: Lanczos meets an invariant subspace long before 60 steps
    got = hessian_extremes(model, batches, 60, torch.Generator().manual_seed(0))
    assert model.training
    assert eigenvalues[0] < 0 < eigenvalues[-1]
    assert got.lambda_max == pytest.approx(float(eigenvalues[-1]), rel=1e-4)
    assert got.lambda_min == pytest.approx(float(eigenvalues[0]), rel=1e-3, abs=1e-5)


def test_the_hessian_along_a_line_is_the_moved_nets_and_leaves_the_weights_as_they_were() -> None:
    model = tiny_net(1, residual=False, widths=[2, 2, 2]).train()
    batches = [(torch.randn(6, 3, 4, 4), torch.randint(0, 10, (6,))) for _ in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = filter_normalized_direction(model, torch.Generator().manual_seed(3))

    def start() -> torch.Generator:
        return torch.Generator().manual_seed(7)

    centre = hessian_extremes(model, batches, 8, start())
    got = hessian_line(model, d, [-0.5, 0.0, 0.5], batches, 8, start, centre)
    # the weights (and BN buffers) bit for bit as they came, and the mode
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training
    assert got[1] is centre  # the centre's own measurement, not a second one
    moved = tiny_net(1, residual=False, widths=[2, 2, 2])
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.copy_(before[name] + 0.5 * d[name])
    by_hand = hessian_extremes(moved, batches, 8, start())
    assert got[2].lambda_max == pytest.approx(by_hand.lambda_max, rel=1e-4)
    assert got[2].lambda_min == pytest.approx(by_hand.lambda_min, rel=1e-3, abs=1e-6)
    assert got[0].lambda_max != pytest.approx(got[2].lambda_max, rel=1e-3)  # -0.5 is another point
    # without a centre given, a = 0 is measured, and agrees with it
    again = hessian_line(model, d, [0.0], batches, 8, start)
    assert again[0].lambda_max == pytest.approx(centre.lambda_max, rel=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_coordinates_put_the_centre_at_exactly_zero() -> None:
    for points, span in ((3, 1.0), (5, 0.3), (41, 0.7), (11, 1e-3)):
        at = landscape.coordinates(points, span)
        assert at[points // 2] == 0.0 and at[0] == -span and at[-1] == span
    assert landscape.hessian_coordinates(1, 0.3) == [0.0]
    assert landscape.hessian_coordinates(4, 0.3) == landscape.coordinates(4, 0.3)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return twin_runs(tmp_path_factory.mktemp("nets"))


def _all_training_images(residual: bool) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The tiny net of ``nets`` and all of its training images, prepared by hand (not by the
    experiment's code): the normaliser fitted on the training split, as the saved checkpoint has it."""
    model = tiny_net(2, residual=residual)
    train = load_dataset(TINY_DATA).train
    return model, Normalizer.fit(train.images)(train.images), train.labels


def test_landscape_cli_measures_reports_and_redraws(nets: dict[str, Path], tmp_path: Path) -> None:
    refs = ",".join(str(nets[n]) for n in ("plain14", "resnet14"))
    # --images 64 is the whole training split, so an independent computation needs no subset;
    # bf16 for the scans, so the fp32 centre and the fast one must differ (and stay close)
    small = [
        "--images",
        "64",
        "--grid",
        "3",
        "--hessian-steps",
        "6",
        "--hessian-points",
        "3",
        "--batch-size",
        "16",
    ]
    code, printed, err = run_cli(
        [
            "reproduce",
            "landscape",
            "--nets",
            refs,
            "--out",
            str(tmp_path),
            "--quiet",
            "--precision",
            "bf16",
            *small,
        ]
    )
    assert code == 0, err
    record = json.loads((tmp_path / "landscape.json").read_text())
    plain, res = record["nets"]
    assert (plain["label"], res["label"]) == ("plain-14", "ResNet-14")
    assert record["precision"] == "bf16"
    for entry, residual in ((plain, False), (res, True)):
        model, x, y = _all_training_images(residual)
        with torch.no_grad():
            logits = model(x)
        # the fp32 centre is the trained net's mean cross-entropy on its training images, in eval mode
        assert entry["centre_loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
        assert entry["centre_accuracy"] == float((logits.argmax(1) == y).float().mean())
        # the scans ran in bf16: close to fp32, but not fp32 itself
        assert entry["centre_loss_fast"] != entry["centre_loss"]
        assert entry["centre_loss_fast"] == pytest.approx(entry["centre_loss"], rel=0.05)
        # the centre of the grid and of the line is the trained net, in the scans' precision
        assert entry["grid"]["loss"][1][1] == pytest.approx(entry["centre_loss_fast"], rel=1e-6)
        assert entry["line"]["loss"][2] == pytest.approx(entry["centre_loss_fast"], rel=1e-6)
    # Lanczos' Ritz values lie inside the spectrum of the Hessian of the same mean loss (here from
    # 30 steps on the same images, by hand), and a few steps find its top; the ratio is theirs
    h = plain["hessian"]
    model, x, y = _all_training_images(residual=False)
    ref = hessian_extremes(model, [(x, y)], 30, torch.Generator().manual_seed(5))
    assert ref.lambda_min - 1e-4 <= h["lambda_min"] <= h["lambda_max"] <= ref.lambda_max * (1 + 1e-4)
    assert h["lambda_max"] == pytest.approx(ref.lambda_max, rel=0.05)
    for entry in (plain, res):
        assert entry["hessian"]["ratio"] == pytest.approx(
            abs(entry["hessian"]["lambda_min"] / entry["hessian"]["lambda_max"]), rel=1e-9
        )
    # the Hessian along the line: 3 points over [-1, 1], the centre's own measurement at 0, and at
    # a = 1 the Hessian of the net moved by hand (same start vector, same steps, all images at once)
    assert record["hessian_points"] == 3
    for entry in (plain, res):
        line = entry["hessian_line"]
        assert [p["a"] for p in line] == [-1.0, 0.0, 1.0]
        assert {k: line[1][k] for k in ("lambda_max", "lambda_min", "residual_max", "residual_min")} == {
            k: entry["hessian"][k] for k in ("lambda_max", "lambda_min", "residual_max", "residual_min")
        }
        assert line[1]["ratio"] == entry["hessian"]["ratio"]
        assert all(
            p["ratio"] == pytest.approx(abs(p["lambda_min"] / p["lambda_max"]), rel=1e-9) for p in line
        )
        assert entry["phase_times_s"]["hessian_line"] > 0
    model, x, y = _all_training_images(residual=False)
    d1 = filter_normalized_direction(model, seeded_generator(0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(d1[name])
    moved = hessian_extremes(model, [(x, y)], 6, seeded_generator(0, 1))
    assert plain["hessian_line"][2]["lambda_max"] == pytest.approx(moved.lambda_max, rel=1e-3)
    assert plain["hessian_line"][2]["lambda_min"] == pytest.approx(moved.lambda_min, rel=1e-2, abs=1e-5)
    verdicts = record["results"]["verdicts"]
    # 14 layers: at the centre and along the line, reported, not judged
    assert [v["mark"] for v in verdicts] == ["INCONCLUSIVE", "INCONCLUSIVE"]
    assert "along the line, 3 points" in verdicts[1]["text"]
    assert all(f"{v['mark']}: {v['text']}" in printed for v in verdicts)
    md = (tmp_path / "report.md").read_text()
    assert "Li et al. (2018) beside ours" in md and "wall time" in md
    assert "along direction 1 (lambda_max / lambda_min beside)" in md and "2 extra Lanczos runs of 6" in md
    figs = [
        tmp_path / "figures" / f"landscape-{f}.png" for f in ("contours", "1d", "hessian", "hessian-line")
    ]
    for f in figs:
        f.unlink()
    code, _, err = run_cli(["report", str(tmp_path)])
    assert code == 0, err
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in figs)
    # a record made before --hessian-points (no Hessian along the line) still renders, as it did
    old = tmp_path / "old"
    old.mkdir()
    for entry in record["nets"]:
        del entry["hessian_line"], entry["phase_times_s"]["hessian_line"]
    del record["hessian_points"]
    (old / "landscape.json").write_text(json.dumps(record))
    code, _, err = run_cli(["report", str(old)])
    assert code == 0, err
    md = (old / "report.md").read_text()
    assert "ResNet-14 0." in md and "measured at the trained weights only" in md
    assert (
        "along direction 1 (lambda_max" not in md
        and not (old / "figures" / "landscape-hessian-line.png").exists()
    )
    assert [v["mark"] for v in json.loads((old / "landscape.json").read_text())["results"]["verdicts"]] == [
        "INCONCLUSIVE"
    ]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--nets", "{plain14}", "--grid", "0"], "positive integer"),
        (["--nets", "{plain14}", "--grid", "2"], "--grid must be at least 3"),
        (["--nets", "{plain14}", "--span", "0"], "positive number"),
        (["--nets", "{plain14}", "--hessian-points", "0"], "positive integer"),
        (["--nets", "{plain14}", "--hessian-points", "-3"], "positive integer"),
        (["--nets", "{plain14}", "--images", "100000"], "more than the 64 training images"),
        (["--nets", "akamaster:nosuchnet"], "unknown model 'nosuchnet'"),
        (["--nets", "{tmp}/missing"], "does not exist"),
    ],
)
def test_bad_landscape_arguments_are_one_line_errors(
    nets: dict[str, Path], tmp_path: Path, args: list[str], fragment: str
) -> None:
    args = [a.format(plain14=nets["plain14"], tmp=tmp_path) for a in args]
    err = one_line_error(["reproduce", "landscape", "--out", str(tmp_path / "out"), *args])
    assert fragment in err, err


def _net(label: str, depth: int, residual: bool, ratio: float) -> dict:
    return net_entry(label, depth, residual, hessian={"ratio": ratio})


def test_verdicts_judge_56_layers_and_report_20() -> None:
    nets = [
        _net("plain-20", 20, False, 0.05),
        _net("ResNet-20", 20, True, 0.08),
        _net("plain-56", 56, False, 0.4),
        _net("ResNet-56", 56, True, 0.02),
    ]
    got = landscape_verdicts.verdicts(nets)
    assert [v.holds for v in got] == [None, True, True]
    assert "ResNet-20 0.0800 vs plain-20 0.0500" in got[0].text and "not smaller" in got[0].text
    assert "plain-56 0.4000 vs plain-20 0.0500" in got[2].text
    nets[3]["hessian"]["ratio"] = 0.5
    assert landscape_verdicts.verdicts(nets)[1].holds is False


def _lined(label: str, depth: int, residual: bool, ratios: list[float]) -> dict:
    """A net with the Hessian's ratio at a = -1, -0.5, 0, 0.5, 1 (the centre's is the middle one)."""
    at = [-1.0, -0.5, 0.0, 0.5, 1.0]
    line = [
        {
            "a": a,
            "ratio": r,
            "lambda_max": 10.0,
            "lambda_min": -10.0 * r,
            "residual_max": 0.0,
            "residual_min": 0.0,
        }
        for a, r in zip(at, ratios, strict=True)
    ]
    return net_entry(label, depth, residual, hessian={"ratio": ratios[2]}, hessian_line=line)


def test_the_verdict_along_the_line_compares_the_largest_ratios() -> None:
    # plain-56 sharp at the centre (the smaller ratio there, as on the JPEG-trained pair) and, made up
    # here, non-convex away from it; ResNet-56 near-convex all along: the centre verdict fails, the
    # line's holds
    plain56 = _lined("plain-56", 56, False, [0.6, 0.3, 0.005, 0.2, 0.45])
    res56 = _lined("ResNet-56", 56, True, [0.05, 0.04, 0.03, 0.04, 0.06])
    nets = [_lined("plain-20", 20, False, [0.1, 0.02, 0.004, 0.02, 0.1]), plain56]
    nets += [_lined("ResNet-20", 20, True, [0.2, 0.03, 0.012, 0.03, 0.08]), res56]
    got = landscape_verdicts.verdicts(nets)
    assert [v.holds for v in got] == [None, None, False, True, True]
    assert "ResNet-20 0.2000 (at a = -1) vs plain-20 0.1000 (at a = -1)" in got[1].text
    assert "not smaller" in got[1].text
    assert "ResNet-56 0.0600 (at a = 1) vs plain-56 0.6000 (at a = -1)" in got[3].text
    assert "more convex along the line reproduced" in got[3].text
    # the other way: one non-convex point of the ResNet's above the plain net's worst
    res56["hessian_line"][1]["ratio"] = 0.7
    got = landscape_verdicts.verdicts(nets)
    assert got[3].holds is False and "ResNet-56 0.7000 (at a = -0.5)" in got[3].text
    # a pair measured at the centre only (one point, or a record from before the line) gets no line verdict
    res56["hessian_line"] = res56["hessian_line"][2:3]
    del plain56["hessian_line"]
    assert [v.holds for v in landscape_verdicts.verdicts(nets)] == [None, None, False, True]


def test_a_rerun_reuses_each_nets_scan_unless_the_settings_change(
    nets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = count_measurements(monkeypatch, landscape)
    small = ["--images", "16", "--grid", "3", "--hessian-steps", "3", "--batch-size", "16", "--quiet"]
    base = ["reproduce", "landscape", "--out", str(tmp_path), "--nets", str(nets["plain14"]), *small]
    assert run_cli(base)[0] == 0
    first = json.loads((tmp_path / "landscape.json").read_text())["nets"][0]
    assert run_cli(base)[0] == 0
    again = json.loads((tmp_path / "landscape.json").read_text())["nets"][0]
    assert measured == ["plain-14"] and again["reused"]
    assert again["grid"] == first["grid"] and again["hessian"] == first["hessian"]
    assert "hessian_line" in first["phase_times_s"] and len(first["hessian_line"]) == 5  # the default
    assert run_cli([*base, "--span", "0.5", "--hessian-points", "1"])[0] == 0
    assert measured == ["plain-14", "plain-14"]
    centre_only = json.loads((tmp_path / "landscape.json").read_text())["nets"][0]
    assert [p["a"] for p in centre_only["hessian_line"]] == [0.0]
    assert centre_only["hessian_line"][0]["lambda_max"] == centre_only["hessian"]["lambda_max"]
    assert "hessian_line" not in centre_only["phase_times_s"]
