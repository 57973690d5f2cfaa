"""`resnetlab models` and `resnetlab summary`: output, JSON, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli_runner import run_cli


def test_summary_json_reports_resnet20_params_and_macs() -> None:
    code, out, _ = run_cli(["summary", "resnet20", "--json"])
    data = json.loads(out)
    assert code == 0
    assert data["params"] == 269722 and data["macs"] == 40_551_040
    assert [s["name"] for s in data["stages"]] == ["stem", "layer1", "layer2", "layer3", "head"]
    assert data["stages"][3]["output_shape"] == [64, 8, 8]
    assert sum(s["params"] for s in data["stages"]) == data["params"]


def test_summary_table_puts_paper_value_beside_ours() -> None:
    code, out, _ = run_cli(["summary", "resnet50"])
    assert code == 0
    assert "25,557,032" in out
    assert "paper multiply-adds: 3.800G (ours 3.858G, +1.5%, Table 1)" in out


def test_models_lists_pattern_with_counts() -> None:
    code, out, _ = run_cli(["models", "resnet5*"])
    lines = out.strip().splitlines()
    assert code == 0 and [line.split()[0] for line in lines[1:]] == ["resnet56", "resnet50"]
    assert "0.85M" in lines[1] and "3.858G" in lines[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "resnt20"], "unknown model 'resnt20' (did you mean resnet20"),
        (["summary", "resnet20", "--input-size", "0"], "--input-size must be a positive"),
        (["summary", "resnet20", "--input-size", "abc"], "invalid int value"),
        (["models", "zzz*"], "no registered model matches"),
        (["summary"], "the following arguments are required"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv: list[str], message: str) -> None:
    code, _, err = run_cli(argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_installed_console_script_exits_2_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "resnetlab", "summary", "resnet5O"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("resnetlab: error: unknown model 'resnet5O'")
