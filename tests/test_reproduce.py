"""Tiny end-to-end runs of every `resnetlab reproduce` command, `resnetlab report`, and the verdict logic."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import tiny_nets
from resnetlab.analysis import identity
from resnetlab.cli import main
from resnetlab.engine.budget import Speed
from resnetlab.engine.run_status import final_train_error
from resnetlab.engine.rundir import read_metrics, read_summary
from resnetlab.errors import UserError
from resnetlab.experiments import (
    cifar_table,
    degradation,
    finished_runs,
    shared_budget,
    stats,
    training,
)
from resnetlab.experiments.cifar_nets import CifarNet
from resnetlab.experiments.options import Options
from resnetlab.experiments.stats import Stat
from resnetlab.models import ResNet
from resnetlab.reporting.report import LENGTH_HEADER, Verdict
from tiny import LEARNABLE_DATA, SMALL_DATA, TINY_NET

TINY = [
    "--dataset",
    "synthetic:256,128,16,10",
    "--budget-iterations",
    "10",
    "--batch-size",
    "32",
    "--evals",
    "1",
    "--eval-limit",
    "64",
    "--quiet",
]
PNG = b"\x89PNG\r\n\x1a\n"


def _reproduce(out: Path, *args: str) -> int:
    return main(["reproduce", *args, "--out", str(out), *TINY])


def _check_report(out: Path, experiment: str, printed: str) -> dict:
    """Files written, figures non-empty PNGs, the verdicts printed and in both reports."""
    record = json.loads((out / f"{experiment}.json").read_text())
    verdicts = record["results"]["verdicts"]
    assert verdicts
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for v in verdicts:
        assert v["mark"] in ("REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE")
        assert f"**{v['mark']}**: {v['text']}" in md
        assert f"{v['mark']}: {v['text']}" in printed
    assert "report.md" in printed
    assert "FAR below the paper's schedule" in md
    assert record["command"] and record["torch_version"] == torch.__version__
    for fig in (out / "figures").glob("*.png"):
        data = fig.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
        assert f"figures/{fig.name}" in md
    assert page.count("data:image/png;base64,") == md.count("![")
    assert "http://" not in page and "https://" not in page  # self-contained
    return record


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder where degradation has run (plain and residual nets of depth 8 and 14), and its output."""
    folder = tmp_path_factory.mktemp("reproduce")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _reproduce(folder, "degradation", "--depths", "8,14") == 0
    return folder, printed.getvalue()


@pytest.fixture
def out(demo: tuple[Path, str]) -> Path:
    return demo[0]


@pytest.mark.slow
def test_degradation_end_to_end(demo: tuple[Path, str]) -> None:
    out, printed = demo
    record = _check_report(out, "degradation", printed)
    assert record["budget"]["iterations"] == 10
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == [f"{k}-{d}-10it-seed0" for k in ("plain", "resnet") for d in (14, 8)]
    for run in runs:
        assert (out / "runs" / run / "summary.json").is_file()
    assert {p.name for p in (out / "figures").iterdir()} >= {"degradation-fig1.png", "degradation-fig6.png"}
    texts = " ".join(v["text"] for v in record["results"]["verdicts"])
    assert "degradation" in texts and "residual" in texts
    table = record["results"]["tables"][0]
    assert [row[0] for row in table["rows"]] == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "args", "figure"),
    [
        ("responses", ["--depths", "8,14", "--test-images", "64"], "responses-fig7.png"),
        ("gradients", ["--depths", "8,14", "--batches", "1"], "gradients.png"),
        (
            "identity",
            [
                "--depths",
                "8,14",
                "--ks",
                "1,2",
                "--steps",
                "15",
                "--inputs",
                "images",
                "--train-images",
                "64",
            ],
            "identity-vs-k.png",
        ),
        ("shortcuts", ["--depth", "8"], "shortcuts.png"),
        ("cifar-table", ["--depths", "8,14"], "cifar-table.png"),
    ],
)
def test_every_command_end_to_end(
    out: Path, experiment: str, args: list[str], figure: str, capsys: pytest.CaptureFixture
) -> None:
    capsys.readouterr()
    assert _reproduce(out, experiment, *args) == 0
    _check_report(out, experiment, capsys.readouterr().out)
    assert (out / "figures" / figure).is_file()
    assert (out / "degradation.json").is_file()  # one folder, one report with every section
    assert "## Degradation" in (out / "report.md").read_text()


@pytest.mark.slow
def test_finished_runs_are_reused_and_report_redraws_without_training(
    out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def no_training(config):
        raise AssertionError(f"trained {config.out} again")

    runs = [*(out / "runs").glob("*/checkpoint.pt"), *(out / "runs").glob("*/metrics.jsonl")]
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    assert len(stamps) >= 2 * 4  # at least degradation's four nets
    assert _reproduce(out, "degradation", "--depths", "8,14") == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    monkeypatch.setattr("resnetlab.experiments.training.train", no_training)
    for path in [out / "report.md", out / "report.html", *(out / "figures").glob("*.png")]:
        path.unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    _check_report(out, "degradation", capsys.readouterr().out)
    assert (out / "figures" / "degradation-fig6.png").is_file()


@pytest.mark.slow
def test_cifar_table_from_runs_trained_elsewhere(
    out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """--runs assembles the rows from finished runs anywhere, trains nothing, shows each run's
    length beside the paper's 64k, and refuses an unfinished run in one line."""
    monkeypatch.setattr("resnetlab.experiments.training.train", lambda config: pytest.fail("trained"))
    folder = tmp_path / "elsewhere"
    for name in ("resnet-8-10it-seed0", "resnet-14-10it-seed0", "plain-8-10it-seed0"):
        shutil.copytree(out / "runs" / name, folder / "runs" / name)
    table = tmp_path / "table"
    runs = [folder / "runs" / "resnet-14-10it-seed0", folder]  # a run, and a folder holding runs in runs/
    argv = ["reproduce", "cifar-table", "--runs", ",".join(map(str, runs)), "--out", str(table), "--quiet"]
    with pytest.raises(UserError, match="are both ResNet-14 with seed 0: give one"):
        finished_runs.given_runs(tuple(runs))
    argv[3] = str(folder)
    capsys.readouterr()
    assert main(argv) == 0
    record = json.loads((table / "cifar-table.json").read_text())
    assert record["given_runs"] and record["dataset"] == "synthetic:256,128,16,10"
    assert all(Path(entry["dir"]).is_absolute() for entry in record["runs"])
    headers, rows = record["results"]["tables"][0]["headers"], record["results"]["tables"][0]["rows"]
    assert headers[3] == "iterations (paper: 64,000)" == LENGTH_HEADER
    assert [row[0] for row in rows] == ["ResNet-8", "ResNet-14", "plain-8"]
    assert all(row[3] == "10 (shorter than the paper's)" for row in rows)
    error = read_summary(folder / "runs" / "resnet-14-10it-seed0")["final"]["test_top1_error"]
    assert rows[1][4] == f"{100 * error:.2f}%" and rows[1][5] == "-"  # Table 6 has no ResNet-14
    md = (table / "report.md").read_text()
    assert "no nets trained: 3 finished run(s) given with --runs" in md and "FAR below" in md
    assert "figures/cifar-table-curves.png" in md  # the given runs' curves, plain and residual panels
    assert (table / "figures" / "cifar-table-curves.png").read_bytes().startswith(b"\x89PNG")

    unfinished = folder / "runs" / "plain-8-10it-seed0"
    (unfinished / "summary.json").unlink()
    argv[-2] = str(tmp_path / "table2")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{unfinished} is unfinished (iteration 10 of 10; latest test error" in err
    assert not (tmp_path / "table2").exists()
    for extra, message in (
        (["--seeds", "2"], "--runs reads finished runs and trains none: --seeds does not apply"),
        (["--dataset", "cifar10"], "drop --dataset"),
    ):
        assert main([*argv, *extra]) == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--depths", "20"])


DEGRADATION_RUNS = [f"{kind}-{depth}-10it-seed0" for kind in ("plain", "resnet") for depth in (8, 14)]


def _copy_runs(out: Path, folder: Path) -> Path:
    """``folder`` holding a copy of the demo's four finished degradation runs in its ``runs/``."""
    for name in DEGRADATION_RUNS:
        shutil.copytree(out / "runs" / name, folder / "runs" / name)
    return folder


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


@pytest.mark.slow
def test_degradation_from_runs_trained_elsewhere(
    demo: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """--runs draws Fig. 6 and Fig. 1 and checks the four claims on finished runs, training nothing;
    each verdict follows the runs' own numbers, and each run's length is in the table."""
    out = demo[0]
    for name in ("train", "train_fleet"):
        monkeypatch.setattr(f"resnetlab.experiments.training.{name}", lambda *a: pytest.fail("trained"))
    folder = _copy_runs(out, tmp_path / "elsewhere")
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    fig6 = tmp_path / "fig6"
    capsys.readouterr()
    assert main(["reproduce", "degradation", "--runs", str(folder), "--out", str(fig6), "--quiet"]) == 0
    record = _check_report(fig6, "degradation", capsys.readouterr().out)
    assert record["given_runs"] and record["budget"]["iterations"] is None
    assert record["dataset"] == "synthetic:256,128,16,10" and record["recipe"] == "cifar-paper"
    given = [finished_runs.read_finished(Path(e["dir"])) for e in record["runs"]]
    trained_in = {run.config.recipe.batch_size for run in given}
    assert trained_in == {record["batch_size"]} != {Options.batch_size}  # the runs', not the default
    assert sorted(Path(e["dir"]).name for e in record["runs"]) == sorted(DEGRADATION_RUNS)
    assert all(Path(e["dir"]).is_absolute() for e in record["runs"])
    # nothing trained: no run folder under --out, the given runs untouched, none added beside them
    assert not (fig6 / "runs").exists()
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == stamps
    assert {p.name for p in (fig6 / "figures").iterdir()} == {"degradation-fig1.png", "degradation-fig6.png"}

    md = (fig6 / "report.md").read_text()
    assert "no nets trained: 4 finished run(s) given with --runs" in md
    table = record["results"]["tables"][0]
    assert table["headers"][3] == LENGTH_HEADER
    assert [row[0] for row in table["rows"]] == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    assert all(row[3] == "10 (shorter than the paper's)" for row in table["rows"])

    # the verdicts, from the runs' own metrics: a gap counts beyond stats.MIN_GAP (one seed, no std)
    runs = {name.split("-10it")[0]: folder / "runs" / name for name in DEGRADATION_RUNS}
    train = {k: final_train_error(read_metrics(r)) for k, r in runs.items()}
    test = {k: finished_runs.final_test_error(r) for k, r in runs.items()}

    def above(high: float, low: float) -> bool:
        return high - low > stats.MIN_GAP

    expected = [  # (net and its error, the other net and its error, holds)
        (f"plain-14 training error {_pct(train['plain-14'])}", f"plain-8 {_pct(train['plain-8'])}",
         above(train["plain-14"], train["plain-8"])),
        (f"ResNet-14 training error {_pct(train['resnet-14'])}", f"plain-14 {_pct(train['plain-14'])}",
         above(train["plain-14"], train["resnet-14"])),
        # 10 iterations: a deeper ResNet not (yet) better is inconclusive, not refuted
        (f"ResNet-14 training error {_pct(train['resnet-14'])}", f"ResNet-8 {_pct(train['resnet-8'])}",
         above(train["resnet-8"], train["resnet-14"]) or None),
        (f"plain-14 test error {_pct(test['plain-14'])}", f"plain-8 {_pct(test['plain-8'])}",
         above(test["plain-14"], test["plain-8"])),
    ]  # fmt: skip
    verdicts = record["results"]["verdicts"]
    assert len(verdicts) == len(expected)
    for v, (first, second, holds) in zip(verdicts, expected, strict=True):
        assert v["text"].startswith(first) and second in v["text"] and v["holds"] is holds
        assert f"**{v['mark']}**: {v['text']}" in md
    # the same runs, the same verdicts as the reproduction that trained them
    assert verdicts == json.loads((out / "degradation.json").read_text())["results"]["verdicts"]


def _edit_config(run: Path, **changes: object) -> None:
    """Change fields of a run's config.yaml (``recipe_name`` renames its recipe, ``batch_size``
    changes its recipe's batch size)."""
    path = run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    if "recipe_name" in changes:
        config["recipe"]["name"] = changes.pop("recipe_name")
    if "batch_size" in changes:
        config["recipe"]["batch_size"] = changes.pop("batch_size")
    path.write_text(yaml.safe_dump(config | changes))


@pytest.mark.slow
def test_degradation_refuses_runs_it_cannot_compare_in_one_line(
    demo: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = _copy_runs(demo[0], tmp_path / "base")
    b_option = {"model_overrides": {"layers": [2, 2, 2], "shortcut": "B"}}
    # (case, the run spoilt in its copy of the runs, its config changes or None: unfinished, message)
    cases = [
        ("unfinished", "plain-8", None, "is unfinished (iteration 10 of 10"),
        ("two-datasets", "resnet-14", {"dataset": "synthetic:256,128,16,11"}, "trained on different data ("),
        ("two-recipes", "resnet-14", {"recipe_name": "cifar-fast"}, "trained with different recipes ("),
        ("two-batch-sizes", "resnet-14", {"batch_size": 64}, "trained in different batch sizes ("),
        ("option-b", "resnet-14", b_option, "is ResNet-14 (B): Fig. 6 compares plain nets with option-A"),
    ]
    for name, net, changes, message in cases:
        folder = tmp_path / name
        shutil.copytree(base, folder)
        spoilt = folder / "runs" / f"{net}-10it-seed0"
        if changes is None:
            (spoilt / "summary.json").unlink()
        else:
            _edit_config(spoilt, **changes)
        capsys.readouterr()
        argv = ["reproduce", "degradation", "--runs", str(folder), "--out", str(tmp_path / f"{name}-out")]
        assert main([*argv, "--quiet"]) == 2, name
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err and str(spoilt) in err, (name, err)
        assert not (tmp_path / f"{name}-out").exists()
    argv = ["reproduce", "degradation", "--runs", str(base), "--out", str(tmp_path / "x"), "--quiet"]
    for extra, message in (
        (["--dataset", "cifar10"], "drop --dataset"),
        (["--seeds", "2"], "--runs reads finished runs and trains none: --seeds does not apply"),
        (["--budget-iterations", "5"], "--budget-iterations does not apply"),
    ):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, (extra, err)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--depths", "8,14"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err and "not allowed with argument" in err
    assert not (tmp_path / "x").exists()


def _bn_scaled_run(path: Path, residual: bool, scale: float) -> Path:
    """A tiny trained-looking net whose every BN weight and bias is multiplied by ``scale``: the
    layer responses of Fig. 7 (BN outputs) grow or shrink with it, whatever the weights before."""
    ckpt = tiny_nets.checkpoint(2, residual)
    for name, tensor in ckpt["model"].items():
        if ".bn" in f".{name}" and name.endswith((".weight", ".bias")):
            tensor.mul_(scale)
    return tiny_nets.save_run(ckpt, path)


@pytest.mark.parametrize(
    ("plain_scale", "resnet_scale", "mark"),
    [(3.0, 0.3, "REPRODUCED"), (0.3, 3.0, "NOT REPRODUCED")],
)
def test_the_fig7_verdict_follows_the_responses_of_nets_built_to_decide_it(
    tmp_path: Path, plain_scale: float, resnet_scale: float, mark: str, capsys: pytest.CaptureFixture
) -> None:
    """End to end through the CLI: a ResNet built with 10x smaller layer responses than its plain
    twin is REPRODUCED, the same pair the other way round NOT REPRODUCED."""
    plain = _bn_scaled_run(tmp_path / "plain14", False, plain_scale)
    resnet = _bn_scaled_run(tmp_path / "resnet14", True, resnet_scale)
    out = tmp_path / "fig7"
    capsys.readouterr()
    assert main(["reproduce", "responses", "--nets", f"{plain},{resnet}", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "responses.json").read_text())
    (verdict,) = record["results"]["verdicts"]
    assert verdict["mark"] == mark and verdict["holds"] is (mark == "REPRODUCED")
    assert "ResNet-14" in verdict["text"] and "plain-14" in verdict["text"]
    assert f"{mark}: {verdict['text']}" in capsys.readouterr().out
    mean = {n["label"]: sum(n["stds"]) / len(n["stds"]) for n in record["nets"]}
    assert (mean["ResNet-14"] < mean["plain-14"]) is (mark == "REPRODUCED")


def test_a_one_seed_table_says_so_and_claims_no_std() -> None:
    one = cifar_table.table_note([1, 1])
    assert "one seed, so no std" in one and "mean ± std" not in one
    assert "mean ± std over 3 seeds" in cifar_table.table_note([3, 3])
    assert "2 to 3" in cifar_table.table_note([2, 3])
    assert cifar_table.TRAIN_ERROR in one


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["reproduce", "degradation", "--depths", "9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("resnetlab: error:") and "6n+2" in err and "\n" not in err
    assert main(["report", str(tmp_path)]) == 2
    assert "no reproduction records" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "shortcuts", "--budget-iterations", "5", "--budget-minutes", "1"])
    assert exc.value.code == 2


# ---- verdicts on hand-made numbers ------------------------------------------------------------


def _result(depth: int, residual: bool, train: float, test: float) -> degradation.FinalErrors:
    return degradation.FinalErrors(CifarNet(depth, residual), Stat.of([train]), Stat.of([test]), 1000)


def _table(p20: float, p56: float, r20: float, r56: float) -> dict:
    rows = [(20, False, p20), (56, False, p56), (20, True, r20), (56, True, r56)]
    return {CifarNet(d, r): _result(d, r, e, e + 0.05) for d, r, e in rows}


def _verdicts(res: dict, iterations: int) -> list[Verdict]:
    """Degradation verdicts of nets whose runs all have ``iterations``."""
    return degradation.verdicts(res, dict.fromkeys(res, iterations))


def test_degradation_verdicts_reproduced() -> None:
    v = _verdicts(_table(0.48, 0.62, 0.46, 0.41), iterations=400)
    assert v[0] == Verdict("plain-56 training error 62.00% > plain-20 48.00%: degradation reproduced", True)
    assert v[1] == Verdict(
        "ResNet-56 training error 41.00% < plain-56 62.00%: residual learning fixes it", True
    )
    assert v[2].holds is True and "deeper ResNet trains better" in v[2].text
    assert v[3].holds is True and "test error 67.00% > plain-20 53.00%" in v[3].text


def test_cifar_table_verdicts_say_when_a_run_is_shorter_than_the_papers() -> None:
    r20, r56, p56 = CifarNet(20, True), CifarNet(56, True), CifarNet(56, False)
    res = {
        r20: _result(20, True, 0.01, 0.085),
        r56: _result(56, True, 0.01, 0.09),
        p56: _result(56, False, 0.1, 0.2),
    }
    v = cifar_table.verdicts(res, {r20: 64_000, r56: 32_000, p56: 64_000})
    assert v[1] == Verdict("ResNet-20 test error 8.50% vs the paper's 8.75%: within 1 point(s)", True)
    assert v[2] == Verdict(
        "ResNet-56 test error 9.00% vs the paper's 6.97% after 32,000 of the paper's 64,000 iterations: "
        "beyond 1 point(s)",
        False,
    )
    assert len(v) == 3  # no paper number for plain-56
    short = cifar_table.verdicts(res, {r20: 64_000, r56: 6_000, p56: 64_000})
    assert short[2].holds is None and "far too short" in short[2].text


def test_degradation_verdicts_not_reproduced() -> None:
    v = _verdicts(_table(0.50, 0.45, 0.46, 0.47), iterations=400)
    assert v[0] == Verdict(
        "plain-56 training error 45.00% < plain-20 50.00%: degradation not reproduced", False
    )
    assert v[1].holds is False and "residual fix not reproduced" in v[1].text
    assert v[2].holds is None and "cannot test" in v[2].text  # a 400-iteration budget
    long = _verdicts(_table(0.50, 0.45, 0.46, 0.47), iterations=64000)
    assert long[2].holds is False and "not reproduced" in long[2].text


def test_the_deeper_resnet_verdict_reads_the_shorter_of_the_two_resnets_runs() -> None:
    """Finished runs given with --runs may differ in length: a ResNet-56 run of 400 iterations
    cannot refute the claim, whatever the length of the ResNet-20 run beside it."""
    res = _table(0.50, 0.45, 0.46, 0.47)
    lengths = dict.fromkeys(res, 64000)
    assert degradation.verdicts(res, lengths)[2].holds is False
    lengths[CifarNet(56, True)] = 400
    short = degradation.verdicts(res, lengths)[2]
    assert short.holds is None and "400 of the paper's 64,000 iterations cannot test this" in short.text


def test_differences_within_noise_are_not_called_reproduced() -> None:
    v = _verdicts(_table(0.480, 0.485, 0.46, 0.41), iterations=400)
    assert v[0].holds is False and "within noise" in v[0].text
    noisy = Stat.of([0.40, 0.60])  # mean 0.5, std 0.14
    assert not stats.clearly_above(noisy, Stat.of([0.45]))
    assert stats.clearly_above(Stat.of([0.70, 0.71]), Stat.of([0.45, 0.46]))


def test_final_train_error_averages_the_last_tenth() -> None:
    rows = [
        {"kind": "train", "iteration": i, "train_error": e}
        for i, e in ((10, 0.9), (90, 0.5), (95, 0.3), (100, 0.2))
    ]
    rows.insert(2, {"kind": "eval", "iteration": 90, "top1_error": 0.1})
    assert final_train_error(rows) == pytest.approx(0.25)  # iterations 95 and 100 are past 90


def test_shortcut_verdicts() -> None:
    from resnetlab.experiments import shortcuts

    res = {
        "plain": _result(20, False, 0.5, 0.30),
        "A": degradation.FinalErrors(CifarNet(20, True, "A"), Stat.of([0.4]), Stat.of([0.20]), 1),
        "B": degradation.FinalErrors(CifarNet(20, True, "B"), Stat.of([0.4]), Stat.of([0.25]), 1),
        "C": degradation.FinalErrors(CifarNet(20, True, "C"), Stat.of([0.4]), Stat.of([0.245]), 1),
    }
    v = shortcuts.verdicts(res)
    assert v[0].holds is True
    assert v[1].holds is False and "reversed" in v[1].text  # B worse than A
    assert v[2].holds is None  # C vs B: 0.5 points apart, within MIN_GAP


# ---- the construction argument ----------------------------------------------------------------


@pytest.mark.parametrize("residual", [False, True])
def test_deepen_adds_exact_identity_blocks(residual: bool) -> None:
    torch.manual_seed(0)
    shallow = ResNet(**TINY_NET, residual=residual)
    shallow.train()
    for _ in range(3):  # non-trivial BN running statistics
        shallow(torch.randn(8, 3, 8, 8))
    shallow.eval()
    deep = identity.deepen(shallow, 20)
    assert deep.config["layers"] == [3, 3, 3] and deep.config["residual"] == residual
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(deep(x), shallow(x), atol=1e-5)
    if residual:  # zero-gamma residual blocks are the identity in training mode too
        with torch.no_grad():
            assert torch.allclose(deep.train()(x), shallow.train()(x), atol=1e-5)


def test_identity_learning_residual_beats_plain() -> None:
    errors = {}
    for residual in (False, True):
        torch.manual_seed(0)
        source = identity.MapSource(width=4, size=4, seed=1)
        errors[residual] = identity.learn_identity(
            identity.stack(2, 4, residual), source, 60, torch.device("cpu")
        )
    assert errors[True] < errors[False]


def test_time_budget_is_planned_once_and_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(shared_budget, "plan_iterations", lambda opts, nets, started: calls.append(1) or 123)
    opts = Options(out=tmp_path, dataset="synthetic", budget_minutes=2.0)
    nets = degradation.nets_for((8, 14))
    assert shared_budget.resolve_iterations(opts, nets, default=5) == 123
    assert shared_budget.resolve_iterations(opts, list(reversed(nets)), default=5) == 123
    assert len(calls) == 1
    assert shared_budget.resolve_iterations(Options(out=tmp_path, budget_iterations=7), nets, default=5) == 7
    assert shared_budget.resolve_iterations(Options(out=tmp_path), nets, default=5) == 5


def test_time_budget_measures_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = Options(out=tmp_path, dataset=LEARNABLE_DATA, batch_size=32, evals=1, eval_limit=32, quiet=True)
    nets = degradation.nets_for((8,))
    measured = []
    real = shared_budget.measure_speed
    monkeypatch.setattr(
        shared_budget, "measure_speed", lambda *args: measured.append(real(*args)) or measured[-1]
    )
    shared_budget.plan_iterations(Options(**{**opts.__dict__, "budget_minutes": 2.0}), nets)
    assert len(measured) == len(nets) and all(s.step_s > 0 and s.eval_image_s > 0 for s in measured)

    # How the count follows from a speed, with a fixed one: the machine's load cannot change it.
    monkeypatch.setattr(
        shared_budget, "measure_speed", lambda *args: Speed(step_s=0.01, eval_image_s=1e-4, checkpoint_s=0.0)
    )
    small, large = (
        shared_budget.plan_iterations(Options(**{**opts.__dict__, "budget_minutes": m}), nets)
        for m in (0.5, 2.0)
    )
    assert 10 <= small < large
    with pytest.raises(UserError, match="budget-minutes"):  # less than one run's overhead
        shared_budget.plan_iterations(Options(**{**opts.__dict__, "budget_minutes": 0.01}), nets)


def test_time_budget_times_the_step_the_runs_take(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Timing an NCHW step for runs that train channels-last planned ~20% too few iterations.
    timed = []

    def fake_measure(fleet, *args):
        timed.extend(step.channels_last for step in fleet.steps)
        return Speed(step_s=0.01, eval_image_s=1e-4, checkpoint_s=0.0)

    monkeypatch.setattr(shared_budget, "measure_speed", fake_measure)
    opts = Options(out=tmp_path, dataset=LEARNABLE_DATA, batch_size=32, budget_minutes=1.0, quiet=True)
    shared_budget.plan_iterations(opts, degradation.nets_for((8,)))
    run_config = training.train_config(opts, degradation.nets_for((8,))[0], 10, 0)
    assert timed and all(t == run_config.channels_last for t in timed)


def test_fresh_net_has_the_runs_initial_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # gradients "at initialisation" rebuild the net with the run's seed; the engine must build the same.
    import resnetlab.engine.net_run as net_run
    import resnetlab.engine.trainer as trainer

    built = {}
    create = net_run.build_model

    def capture(*args, **kwargs):
        model = create(*args, **kwargs)
        built["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    monkeypatch.setattr(net_run, "build_model", capture)
    opts = Options(out=tmp_path, dataset=SMALL_DATA, batch_size=16, evals=0, quiet=True)
    net = CifarNet(8, False)
    trainer.train(training.train_config(opts, net, 1, seed=3))
    torch.manual_seed(3)
    fresh = net.build(10).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in built["state"].items())


def test_response_verdicts_call_a_small_gap_in_a_short_run_inconclusive() -> None:
    from resnetlab.experiments import responses
    from resnetlab.experiments.cifar_nets import CifarNet

    plain, res = CifarNet(8, False), CifarNet(8, True)
    slightly_smaller = responses.verdicts({plain: [0.895], res: [0.870]}, iterations=228)
    assert slightly_smaller[0].holds is None and "too short" in slightly_smaller[0].text
    clearly_smaller = responses.verdicts({plain: [1.0], res: [0.8]}, iterations=228)
    assert clearly_smaller[0].holds is True
    clearly_larger = responses.verdicts({plain: [0.8], res: [1.0]}, iterations=228)
    assert clearly_larger[0].holds is False


def test_shortcut_verdict_against_plain_within_noise_is_inconclusive_and_a_loss_is_not_reproduced() -> None:
    from resnetlab.experiments import shortcuts

    def option(o: str, test: float) -> degradation.FinalErrors:
        return degradation.FinalErrors(CifarNet(8, True, o), Stat.of([0.6]), Stat.of([test]), 1)

    close = {"plain": _result(8, False, 0.6, 0.7009), "A": option("A", 0.6946), "B": option("B", 0.6887)}
    assert shortcuts.verdicts(close)[0].holds is None
    lost = {"plain": _result(8, False, 0.6, 0.60), "A": option("A", 0.70), "B": option("B", 0.50)}
    first = shortcuts.verdicts(lost)[0]
    assert first.holds is False and "option A is worse" in first.text


def test_a_run_directory_that_cannot_be_read_is_one_named_error(tmp_path: Path) -> None:
    good = {"params": 1, "wall_time_s": 2.5, "final": {"top1_error": 0.25}}
    (tmp_path / "summary.json").write_text(json.dumps(good))
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "iteration": 1}\n\n{"kind": "eval"}\n')
    assert read_summary(tmp_path) == good
    assert [r["kind"] for r in read_metrics(tmp_path)] == ["train", "eval"]
    bad_summaries = {
        "[1]": "not a JSON object",
        json.dumps({**good, "final": {}}): "no number final.top1_error",
        json.dumps({**good, "params": True, "wall_time_s": "2"}): "no number params, wall_time_s",
        '{"params": 1': "JSONDecodeError",
    }
    for text, problem in bad_summaries.items():
        (tmp_path / "summary.json").write_text(text)
        with pytest.raises(UserError, match=f"cannot read {tmp_path}/summary.json \\({problem}") as err:
            read_summary(tmp_path, fix="do this")
        assert str(err.value).endswith(": do this") and "\n" not in str(err.value)
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train"}\n{"kind": \n')
    with pytest.raises(UserError, match=r"metrics.jsonl \(damaged at line 2\): delete the run and rerun"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").unlink()
    with pytest.raises(UserError, match=r"metrics.jsonl \(No such file or directory\): rerun"):
        read_metrics(tmp_path)
