"""The landscape study's report section: contours, 1-D slices, the Hessian's ratios at the centre and
along the line, the findings of Li et al. beside ours and the verdicts
(:mod:`~resnetlab.experiments.landscape_verdicts`), from the record alone. Records made before
``--hessian-points`` (no Hessian along the line) render as they did."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnetlab.experiments import studies
from resnetlab.experiments.landscape_verdicts import line_points, ratio, verdicts, worst_on_line
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table
from resnetlab.reporting.text import beside_paper, per_net

CLAIM = (
    "Li, Xu, Taylor, Studer & Goldstein (2018): on filter-normalised 2-D slices around the trained "
    "weights, ResNet-56 looks smooth and nearly convex while the same net without shortcuts is "
    "chaotic; without shortcuts the chaos grows with depth (20 -> 56 -> 110), while at 20 layers both "
    "look benign. The Hessian's |lambda_min / lambda_max| is near zero where the surface looks convex "
    "and large where it does not."
)
PAPER = {  # Li et al. 2018, Sec. 5 and 6 (Figs. 5 and 7), in words
    "56": "ResNet-56: smooth, nearly convex around the minimum; ResNet-56 without shortcuts: chaotic, "
    "sharply non-convex",
    "20": "at 20 layers the nets with and without shortcuts both look fairly convex",
    "depth": "without shortcuts the surface turns from convex to chaotic as depth grows 20 -> 56 -> 110",
    # (no "|" in table cells: Markdown reads it as a column break)
    "hessian": "the ratio abs(lambda_min/lambda_max) is near zero (convex) around the minima that look "
    "convex, large over much of the chaotic ones",
    "off-centre": "mapped over the whole plotted plane (Fig. 7): the net without shortcuts has large "
    "non-convex regions away from the centre, ResNet-56 stays near-convex throughout",
}


def _rows(nets: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Panels of the contour figure: a row per depth, plain left and residual right."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for n in sorted(nets, key=lambda n: (n["depth"], n["residual"])):
        rows.setdefault(n["depth"], []).append(n)
    return list(rows.values())


def _tables(nets: list[dict[str, Any]], record: dict[str, Any]) -> list[Table]:
    rows = []
    for n in nets:
        h = n["hessian"]
        grid = [v for line in n["grid"]["loss"] for v in line]
        check = (
            "" if record["precision"] == "fp32" else f" ({record['precision']}: {n['centre_loss_fast']:.4f})"
        )
        rows.append(
            [
                n["label"],
                f"{n['centre_loss']:.4f}{check}",
                f"{100 * n['centre_accuracy']:.2f}%",
                f"{max(grid):.3g}",
                f"{h['lambda_max']:.4g} (± {h['residual_max']:.2g})",
                f"{h['lambda_min']:.4g} (± {h['residual_min']:.2g})",
                f"{h['ratio']:.4f}",
                ", ".join(f"{k} {v:.0f} s" for k, v in n["phase_times_s"].items()),
            ]
        )
    table = Table(
        "Training loss at the trained weights, the largest loss on the grid, and the Hessian's extremes",
        [
            "net",
            "loss at centre (fp32)",
            "training accuracy",
            "largest loss on grid",
            "lambda_max",
            "lambda_min",
            "abs(lambda_min/lambda_max)",
            "time",
        ],
        rows,
        f"On {record['images']} training images; Hessian of the mean loss over all parameters in fp32, "
        f"{record['hessian_steps']} Lanczos steps; ± is the Lanczos residual bound (an eigenvalue lies "
        "that close to the estimate; lambda_min errs towards zero when not converged).",
    )
    return [table, *_line_tables(nets), _paper_table(nets), studies.origins(nets)]


def _line_tables(nets: list[dict[str, Any]]) -> list[Table]:
    """The ratio at each point of the line, a row per net, with the extremes it divides; none where
    no net has the Hessian along the line."""
    lined = [n for n in nets if line_points(n)]
    if not lined:
        return []
    at = sorted({p["a"] for n in lined for p in line_points(n)})
    rows = []
    for n in lined:
        points = {p["a"]: p for p in line_points(n)}
        cells = [
            f"{points[a]['ratio']:.4f} ({points[a]['lambda_max']:.4g} / {points[a]['lambda_min']:.4g})"
            if a in points
            else ""
            for a in at
        ]
        worst = worst_on_line(n)
        rows.append([n["label"], *cells, f"{worst['ratio']:.4f} at a = {worst['a']:g}"])
    return [
        Table(
            "The Hessian's abs(lambda_min/lambda_max) along direction 1 (lambda_max / lambda_min beside)",
            ["net", *(f"a = {a:g}" for a in at), "largest"],
            rows,
            "The weights moved to w + a d1 along the line of the 1-D slice, the Hessian measured there as "
            "at the centre (a = 0, the centre's own measurement); the largest ratio is what the verdict "
            "along the line compares.",
        )
    ]


def _paper_table(nets: list[dict[str, Any]]) -> Table:
    def ratios(pick: Callable[[dict[str, Any]], bool]) -> str:
        return per_net(nets, pick, lambda n: f"{n['label']} {ratio(n):.4f}")

    rows = [
        ["56 layers, with and without shortcuts", PAPER["56"], ratios(lambda n: n["depth"] == 56)],
        ["20 layers", PAPER["20"], ratios(lambda n: n["depth"] == 20)],
        ["depth, without shortcuts", PAPER["depth"], ratios(lambda n: not n["residual"])],
        ["Hessian", PAPER["hessian"], ratios(lambda n: True)],
    ]
    if any(line_points(n) for n in nets):
        rows.append(
            [
                "Hessian off the centre",
                PAPER["off-centre"],
                per_net(
                    nets,
                    lambda n: bool(line_points(n)),
                    lambda n: f"{n['label']} largest along the line {worst_on_line(n)['ratio']:.4f}",
                ),
            ]
        )
    return beside_paper("Li et al. (2018) beside ours (ours: abs(lambda_min/lambda_max))", "Li et al.", rows)


def section(out: Path, record: dict[str, Any]) -> Section:
    """The landscape figures, tables and verdicts, from the record alone."""
    nets = record["nets"]
    ordered = [n for row in _rows(nets) for n in row]
    span = record["span"]
    contours = figures.landscape_contours(
        [[(n["label"], n["grid"]["loss"]) for n in row] for row in _rows(nets)],
        nets[0]["grid"]["at"],
        out / "figures" / "landscape-contours.png",
        f"Training loss on a filter-normalised 2-D slice, [-{span:g}, {span:g}]^2, same levels throughout",
    )
    lines = figures.landscape_lines(
        {n["label"]: (n["line"]["at"], n["line"]["loss"], n["line"]["accuracy"]) for n in ordered},
        out / "figures" / "landscape-1d.png",
        "Training loss and accuracy along one filter-normalised direction",
    )
    bars = figures.bars(
        [n["label"] for n in ordered],
        [ratio(n) for n in ordered],
        out / "figures" / "landscape-hessian.png",
        "Non-convexity at the trained weights",
        "|lambda_min / lambda_max|",
    )
    points = record.get("hessian_points", 1)  # records made before --hessian-points: the centre only
    budget = (
        f"no nets trained: {len(nets)} trained nets, {record['images']} training images, grid "
        f"{record['grid']}x{record['grid']} and a line of {record['line']} points over "
        f"[-{span:g}, {span:g}], "
        f"{record['hessian_steps']} Lanczos steps at {points} point(s) of the line, seed {record['seed']}, "
        f"batch {record['batch_size']}"
    )
    lined = {
        n["label"]: ([p["a"] for p in line_points(n)], [p["ratio"] for p in line_points(n)])
        for n in ordered
        if line_points(n)
    }
    line_figures = []
    if lined:
        along = figures.landscape_hessian_line(
            [
                (
                    f"{row[0]['depth']} layers",
                    {n["label"]: lined[n["label"]] for n in row if n["label"] in lined},
                )
                for row in _rows(nets)
                if any(n["label"] in lined for n in row)
            ],
            out / "figures" / "landscape-hessian-line.png",
            "Non-convexity along direction 1",
        )
        line_figures.append(
            Figure(
                along,
                "|lambda_min/lambda_max| of the Hessian at each point of the 1-D line (0: the trained "
                "weights), twins on one axis, plain dashed.",
            )
        )
    return Section(
        title="Loss landscapes and Hessian of trained nets (Li et al. 2018)",
        claim=CLAIM,
        meta=studies.study_meta(record, budget),
        tables=_tables(ordered, record),
        verdicts=verdicts(nets),
        figures=[
            Figure(
                contours, "Loss contours around the trained weights (cross): plain nets left, ResNets right."
            ),
            Figure(
                lines, "1-D slices along direction 1: loss (left, log scale) and training accuracy (right)."
            ),
            Figure(
                bars, "|lambda_min/lambda_max| of the Hessian at the trained weights (smaller: more convex)."
            ),
            *line_figures,
        ],
        notes=[
            "Directions: Gaussian, each filter rescaled to the norm of the trained filter (conv output "
            "channels, fc rows); zero for BN weights and biases and the fc bias, as Li et al. do by default. "
            "Nets of the same shape get the same Gaussian draws (seed "
            f"{record['seed']}).",
            "BN runs in eval mode on its running statistics for every point; the scan checks that no "
            "running statistic changed.",
            f"Grid and line losses in {record['precision']} ({record['precision_reason']}); the "
            "loss at the centre and the Hessian in fp32.",
            "Li et al. scan the whole training set on a 51x51 grid; here a fixed subset and a coarser grid "
            "keep the cost within minutes on a CPU: the shapes compare, the loss values are of the subset.",
            _line_note(record, nets),
        ],
    )


def _line_note(record: dict[str, Any], nets: list[dict[str, Any]]) -> str:
    """What the Hessian along the line is and what it cost, or that the record has none."""
    points = record.get("hessian_points", 1)
    at = next(([p["a"] for p in line_points(n)] for n in nets if line_points(n)), [])
    if not at:
        return (
            "The Hessian was measured at the trained weights only (--hessian-points 1, or a record made "
            "before that option); Li et al. map its ratio over the whole plane."
        )
    extra = sum(1 for a in at if a != 0)
    return (
        f"Off the centre, the Hessian at {points} evenly spaced points of the 1-D line over "
        f"[-{record['span']:g}, {record['span']:g}] (the weights moved to w + a d1 and restored bit for bit "
        f"after), fp32, BN in eval mode, the same Lanczos start at each: {extra} extra Lanczos runs of "
        f"{record['hessian_steps']} Hessian-vector products each per net"
        + (", the centre's own measurement reused at a = 0" if extra < len(at) else "")
        + "; their time is the hessian_line phase in the table. Li et al. map the ratio over the whole "
        "plane; one line of it is what is affordable here."
    )
