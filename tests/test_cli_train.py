"""`resnetlab train` on the command line: every user mistake is exit code 2 and one line, never a
traceback; recipes resolve base -> paper rule -> YAML -> flags; divergence is exit code 3."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from cli_runner import run_cli
from resnetlab.cli import build_parser
from resnetlab.cli.train import EXIT_DIVERGED, build_config
from tiny import DATA


@pytest.fixture
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    args = ["train", "--model", "resnet20", "--dataset", DATA, "--batch-size", "32", "--iterations", "2"]
    code, _, err = run_cli([*args, "--out", str(out), "--quiet"])
    assert code == 0, err
    return out


def bad_cases(tmp: Path, finished: Path) -> list[tuple[str, list[str], str]]:
    """(id, arguments after `train --out ...`, a fragment the message must contain)."""
    base = ["--model", "resnet20", "--dataset", DATA, "--batch-size", "32", "--iterations", "2"]
    a_file = tmp / "a_file"
    a_file.write_text("x")
    (tmp / "bad.yaml").write_text("lr: [0.1\n")
    (tmp / "unknown.yaml").write_text("learning_rate: 0.1\n")
    (tmp / "corrupt.pt").write_bytes(b"\x00" * 100)
    unfinished = tmp / "unfinished"
    unfinished.mkdir()
    torch.save({}, unfinished / "checkpoint.pt")
    started = tmp / "started"
    started.mkdir()
    (started / "metrics.jsonl").write_text("")
    return [
        ("unknown-model", ["--model", "resnet21", "--dataset", DATA], "unknown model 'resnet21'"),
        ("unknown-dataset", ["--model", "resnet20", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        ("dataset-without-path", ["--model", "resnet20", "--dataset", "folder:"], "unknown dataset"),
        ("bad-synthetic", ["--model", "resnet20", "--dataset", "synthetic:1,2,3,4,5"], "synthetic spec"),
        ("missing-folder", ["--model", "resnet20", "--dataset", f"folder:{tmp}/none"], "none"),
        ("unknown-recipe", [*base, "--recipe", "fast"], "unknown recipe 'fast'"),
        ("no-model", ["--dataset", DATA], "--model"),
        ("zero-iterations", [*base, "--iterations", "0"], "--iterations"),
        ("negative-iterations", [*base, "--iterations", "-5"], "--iterations"),
        ("negative-budget", [*base[:-2], "--budget-minutes", "-1"], "--budget-minutes"),
        ("nan-budget", [*base[:-2], "--budget-minutes", "nan"], "--budget-minutes"),
        ("iterations-and-budget", [*base, "--budget-minutes", "1"], "not both"),
        ("negative-lr", [*base, "--lr", "-0.1"], "lr must be"),
        ("lr-not-a-number", [*base, "--lr", "abc"], "invalid float value"),
        ("zero-batch", [*base, "--batch-size", "0"], "batch_size"),
        ("momentum-above-1", [*base, "--momentum", "1.5"], "momentum"),
        ("nesterov-without-momentum", [*base, "--momentum", "0", "--nesterov"], "nesterov"),
        ("label-smoothing-1", [*base, "--label-smoothing", "1"], "label_smoothing"),
        ("unknown-schedule", [*base, "--schedule", "exponential"], "invalid choice"),
        ("amp-fp16", [*base, "--amp", "fp16"], "invalid choice"),
        ("unknown-device", [*base, "--device", "tpu"], "invalid choice"),
        ("missing-config", [*base, "--config", str(tmp / "none.yaml")], "none.yaml"),
        ("bad-yaml", [*base, "--config", str(tmp / "bad.yaml")], "not valid YAML"),
        ("unknown-yaml-field", [*base, "--config", str(tmp / "unknown.yaml")], "learning_rate"),
        ("negative-val-split", [*base, "--val-split", "-1"], "--val-split"),
        ("val-split-too-large", [*base, "--val-split", "256"], "leaves no training images"),
        ("batch-larger-than-data", [*base, "--batch-size", "512"], "fewer than one batch"),
        ("zero-log-every", [*base, "--log-every", "0"], "--log-every"),
        ("negative-eval-limit", [*base, "--eval-limit", "-3"], "--eval-limit"),
        ("zero-checkpoint-minutes", [*base, "--checkpoint-minutes", "0"], "--checkpoint-minutes"),
        ("negative-seed", [*base, "--seed", "-1"], "--seed"),
        ("out-under-a-file", [*base, "--out", str(a_file / "run")], str(a_file)),
        ("out-is-a-file", [*base, "--out", str(a_file)], "not a directory"),
        ("unfinished-run", [*base, "--out", str(unfinished)], "--resume"),
        ("started-run", [*base, "--out", str(started)], "--overwrite"),
        ("finished-other-config", [*base, "--lr", "0.05", "--out", str(finished)], "different config"),
        ("resume-missing", ["--resume", str(tmp / "nothing")], "does not exist"),
        ("resume-corrupt", ["--resume", str(tmp / "corrupt.pt")], "corrupt.pt"),
        ("resume-with-new-lr", ["--resume", str(finished), "--lr", "0.5"], "--lr cannot be changed"),
        (
            "resume-new-checkpoint-minutes",
            ["--resume", str(finished), "--checkpoint-minutes", "1"],
            "cannot be",
        ),
        ("resume-and-overwrite", ["--resume", str(finished), "--overwrite"], "contradict"),
        ("resume-other-model", ["--resume", str(finished), "--model", "resnet32"], "not resnet32"),
    ]


def test_at_least_twenty_bad_inputs_exit_2_with_one_line(tmp_path, finished_run):
    cases = bad_cases(tmp_path, finished_run)
    if not torch.cuda.is_available():
        cases.append(
            ("cuda-unavailable", ["--model", "resnet20", "--dataset", DATA, "--device", "cuda"], "CUDA")
        )
    assert len(cases) >= 20
    for name, args, fragment in cases:
        out = tmp_path / f"out-{name}"
        extra = [] if "--out" in args or "--resume" in args else ["--out", str(out)]
        code, _, err = run_cli(["train", *extra, *args])
        lines = err.strip().splitlines()
        assert code == 2, f"{name}: exit {code}, stderr {err!r}"
        assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, f"{name}: {err!r}"
        assert fragment in lines[0], f"{name}: {lines[0]!r} lacks {fragment!r}"


def test_argument_errors_write_nothing(tmp_path):
    out = tmp_path / "run"
    code, _, _ = run_cli(["train", "--model", "resnet21", "--dataset", DATA, "--out", str(out)])
    assert code == 2 and not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_non_writable_out_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    code, _, err = run_cli(["train", "--model", "resnet20", "--dataset", DATA, "--out", str(locked / "run")])
    assert code == 2 and "cannot write" in err


def parse(args: list[str]):
    return build_parser().parse_args(["train", *args])


def test_recipe_resolution_order(tmp_path):
    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text("base: cifar-paper\nlr: 0.2\nweight_decay: 0.0005\n")
    config = build_config(
        parse(["--model", "resnet110", "--dataset", DATA, "--config", str(yaml_file), "--lr", "0.3"])
    )
    r = config.recipe
    assert r.warmup_lr == 0.01  # the paper's rule for ResNet-110 ...
    assert r.weight_decay == 0.0005  # ... then the YAML ...
    assert r.lr == 0.3  # ... then the flags
    imagenet = build_config(parse(["--model", "resnet50", "--dataset", "imagenet:/data/in1k"]))
    assert imagenet.recipe.name == "imagenet-paper" and imagenet.out == Path("runs/resnet50-in1k-s0")


def test_modern_flags_reach_the_recipe():
    config = build_config(
        parse(["--model", "resnet20", "--dataset", DATA, "--schedule", "cosine", "--nesterov",
               "--label-smoothing", "0.1", "--zero-init-residual", "--momentum", "0.8"])
    )  # fmt: skip
    r = config.recipe
    assert (r.schedule, r.nesterov, r.label_smoothing, r.zero_init_residual, r.momentum) == (
        "cosine", True, 0.1, True, 0.8
    )  # fmt: skip


def test_divergence_exits_3_with_one_line(tmp_path):
    args = ["train", "--model", "resnet20", "--dataset", DATA, "--batch-size", "32", "--lr", "1e5"]
    code, _, err = run_cli(
        [*args, "--iterations", "100", "--log-every", "1", "--out", str(tmp_path), "--quiet"]
    )
    assert code == EXIT_DIVERGED
    assert len(err.strip().splitlines()) == 1 and "non-finite" in err and "iteration" in err


def test_a_good_run_prints_its_progress_and_directory(tmp_path):
    args = ["train", "--model", "resnet20", "--dataset", DATA, "--batch-size", "32", "--iterations", "3"]
    code, out, err = run_cli([*args, "--log-every", "1", "--out", str(tmp_path / "run")])
    assert code == 0, err
    assert "iter 3/3" in out and "run directory:" in out and "top-1" in out


def test_interval_flags_are_recorded_and_eval_limit_is_exact(tmp_path):
    args = ["train", "--model", "resnet20", "--dataset", "synthetic:256,256,8,10", "--batch-size", "32"]
    flags = ["--iterations", "8", "--eval-every", "4", "--eval-limit", "200", "--checkpoint-minutes", "2.5"]
    code, _, err = run_cli([*args, *flags, "--out", str(tmp_path), "--quiet"])
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["images"]) for r in rows if r["kind"] == "eval"] == [(4, 200), (8, 256)]
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (stored["eval_limit"], stored["checkpoint_minutes"], stored["checkpoint_every"]) == (
        200,
        2.5,
        None,
    )


def test_procs_is_taken_out_of_what_each_rank_runs():
    from resnetlab.cli.train import _without_procs

    argv = ["train", "--procs", "2", "--model", "resnet20", "--procs=3", "--out", "x"]
    assert _without_procs(argv) == ["train", "--model", "resnet20", "--out", "x"]


def test_procs_under_torchrun_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    code, _, err = run_cli(
        ["train", "--model", "resnet20", "--dataset", "synthetic", "--procs", "2", "--out", str(tmp_path)]
    )
    assert code == 2
    assert err == "resnetlab: error: --procs starts its own processes: leave it out under torchrun\n"
