"""The reproductions' figures, drawn with matplotlib's Agg backend from plain numbers.

Every function takes lists of numbers (read from metrics files by the experiments), writes one PNG
atomically and returns its path; nothing here trains or reads runs, so any figure can be redrawn.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from resnetlab.atomic import atomic_write

DPI = 110


@dataclass
class Curve:
    """Error curves of one run against iterations: training (thin) and test (bold), as fractions."""

    label: str
    train_x: list[float] = field(default_factory=list)
    train_y: list[float] = field(default_factory=list)
    test_x: list[float] = field(default_factory=list)
    test_y: list[float] = field(default_factory=list)


def _styles(labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """Plain nets dashed, residual solid; nets of the same depth (the number in the label) share a colour."""
    keys: dict[str, int] = {}
    styles = {}
    for label in labels:
        digits = re.search(r"\d+", label)
        key = digits.group() if digits else label
        keys.setdefault(key, len(keys))
        styles[label] = {
            "color": f"C{keys[key] % 10}",
            "ls": "--" if label.lower().startswith("plain") else "-",
        }
    return styles


def _save(fig: plt.Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path


def _percent(values: Sequence[float]) -> list[float]:
    return [100.0 * v for v in values]


def _draw_curves(ax: plt.Axes, curves: Sequence[Curve], title: str) -> None:
    colors = plt.get_cmap("tab10")
    for i, c in enumerate(curves):
        color = colors(i % 10)
        if c.train_x:
            ax.plot(c.train_x, _percent(c.train_y), color=color, lw=0.8, alpha=0.8)
        if c.test_x:
            ax.plot(c.test_x, _percent(c.test_y), color=color, lw=2.4, marker="o", ms=3)
        ax.plot([], [], color=color, lw=2.4, label=c.label)  # one legend entry per net
    ax.plot([], [], color="gray", lw=0.8, label="training error (thin)")
    ax.plot([], [], color="gray", lw=2.4, label="test error (bold)")
    ax.set_title(title)
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def error_curves(panels: Sequence[tuple[str, Sequence[Curve]]], path: Path, title: str) -> Path:
    """Side-by-side panels of training (thin) and test (bold) error against iterations (Fig. 6 style).

    ``panels`` is a list of (panel title, curves), e.g. [("plain", ...), ("residual", ...)]; the
    panels share the y axis so plain and residual read on the same scale.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), sharey=True, squeeze=False)
    for ax, (panel_title, curves) in zip(axes[0], panels, strict=True):
        _draw_curves(ax, curves, panel_title)
    fig.suptitle(title)
    return _save(fig, path)


def train_test_panels(curves: Sequence[Curve], path: Path, title: str) -> Path:
    """Fig. 1 style: training error on the left, test error on the right, one line per net."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, c in enumerate(curves):
        color = plt.get_cmap("tab10")(i % 10)
        left.plot(c.train_x, _percent(c.train_y), color=color, lw=1.5, label=c.label)
        right.plot(c.test_x, _percent(c.test_y), color=color, lw=2, marker="o", ms=3, label=c.label)
    for ax, what in ((left, "training error"), (right, "test error")):
        ax.set_title(what)
        ax.set_xlabel("iterations")
        ax.set_ylabel(f"{what} (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def accuracy_against_minutes(
    series: dict[str, Sequence[tuple[float, float]]], thresholds: Sequence[float], path: Path, title: str
) -> Path:
    """Test accuracy (fractions) against wall-clock minutes, one line per run, thresholds dotted."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, points) in enumerate(series.items()):
        minutes = [m for m, _ in points]
        ax.plot(
            minutes, _percent([a for _, a in points]), color=f"C{i % 10}", lw=2, marker="o", ms=3, label=label
        )
    for t in thresholds:
        ax.axhline(100 * t, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("wall-clock minutes (evaluations included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(bottom=max(0.0, min((100 * a for pts in series.values() for _, a in pts), default=0) - 5))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return _save(fig, path)


def layer_responses(series: dict[str, Sequence[float]], path: Path, title: str) -> Path:
    """Fig. 7: std of each 3x3 layer's response in layer order (top) and sorted descending (bottom).

    Labels starting with "plain" are drawn dashed, residual nets solid; one colour per net. One
    legend, outside the panels: with many nets of 55 layers any place inside hides data.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7))
    for i, (label, stds) in enumerate(series.items()):
        style = dict(
            color=plt.get_cmap("tab10")(i % 10), ls="--" if label.lower().startswith("plain") else "-"
        )
        top.plot(range(1, len(stds) + 1), stds, label=label, marker=".", ms=4, lw=1.2, **style)
        bottom.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), lw=1.5, **style)
    top.set_title("in layer order")
    top.set_xlabel("layer index (3x3 convs, input to output)")
    bottom.set_title("sorted by magnitude")
    bottom.set_xlabel("layer rank (largest first)")
    for ax in (top, bottom):
        ax.set_ylabel("std of response after BN")
        ax.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="plain dashed")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def gradient_norms(panels: Sequence[tuple[str, dict[str, Sequence[float]]]], path: Path, title: str) -> Path:
    """Per-layer weight-gradient norms on a log axis, one panel per moment (e.g. init, after K)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), sharey=True, squeeze=False)
    for ax, (panel_title, series) in zip(axes[0], panels, strict=True):
        styles = _styles(list(series))
        for label, norms in series.items():
            ax.plot(range(1, len(norms) + 1), norms, marker=".", label=label, **styles[label])
        ax.set_yscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel("layer index (conv and fc weights, input to output)")
        ax.set_ylabel("L2 norm of weight gradient (log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def identity_error(
    ks: Sequence[int], series: dict[str, Sequence[float]], path: Path, title: str, unit: str
) -> Path:
    """Remaining error of learning the identity against the number of stacked blocks K (log y)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, errors) in enumerate(series.items()):
        ls = "--" if label.lower().startswith("plain") else "-"
        ax.plot(ks, errors, ls=ls, marker="o", label=label, color=f"C{i}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.set_yscale("log")
    ax.set_xlabel("K (blocks stacked)")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    path: Path,
    title: str,
    ylabel: str,
    errors: Sequence[float] | None = None,
    reference: Sequence[float | None] | None = None,
    reference_label: str = "paper",
) -> Path:
    """A bar per label (with optional +- error bars) and optional reference markers (e.g. the paper)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(labels) + 2), 4.2))
    x = range(len(labels))
    ax.bar(x, values, yerr=errors, capsize=4, color="C0", label="ours")
    if reference is not None:
        pts = [(i, r) for i, r in enumerate(reference) if r is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "D", color="C3", ms=8, label=reference_label)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), list(labels))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _save(fig, path)


# ---- studies of trained nets: lesions (Veit et al. 2016) and loss landscapes (Li et al. 2018) ----


@dataclass
class LesionSeries:
    """One net's test errors with each block deleted (None: not deletable), which blocks change the
    shape, and the intact net's error; fractions."""

    errors: list[float | None]
    shape_changes: list[bool]
    intact: float


def lesion_blocks(panels: Sequence[tuple[str, dict[str, LesionSeries]]], path: Path, title: str) -> Path:
    """Error against the index of the single deleted block, one panel per kind (plain, residual),
    shared y axis; blocks that change the shape as squares, the intact error dotted."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), sharey=True, squeeze=False)
    for ax, (panel_title, series) in zip(axes[0], panels, strict=True):
        styles = _styles(list(series))
        for label, s in series.items():
            xs = list(range(1, len(s.errors) + 1))
            ys = [float("nan") if e is None else 100 * e for e in s.errors]
            ax.plot(xs, ys, marker="o", ms=4, label=label, **styles[label])
            marks = zip(xs, ys, s.shape_changes, strict=True)
            changed = [(x, y) for x, y, c in marks if c and not math.isnan(y)]
            if changed:
                ax.plot(*zip(*changed, strict=True), "s", ms=9, mfc="none", color=styles[label]["color"])
            ax.axhline(100 * s.intact, color=styles[label]["color"], ls=":", lw=1)
        _error_panel(ax, panel_title, "deleted block (1 = nearest the input)", bool(series))
    fig.suptitle(title)
    return _save(fig, path)


def _error_panel(ax: plt.Axes, title: str, xlabel: str, legend: bool) -> None:
    """The frame both lesion figures share: test error in % from 0 to 100, a grid, the legend."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def lesion_k(
    panels: Sequence[tuple[str, dict[str, Sequence[tuple[int, Sequence[float]]]]]], path: Path, title: str
) -> Path:
    """Error against the number k of deleted blocks: the mean over draws, the min..max band shaded;
    one panel per kind, shared y axis. ``panels`` maps each label to [(k, errors of the draws)]."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), sharey=True, squeeze=False)
    for ax, (panel_title, series) in zip(axes[0], panels, strict=True):
        styles = _styles(list(series))
        for label, points in series.items():
            ks = [k for k, _ in points]
            mean = [100 * sum(e) / len(e) for _, e in points]
            ax.plot(ks, mean, marker="o", ms=4, label=label, **styles[label])
            low, high = [100 * min(e) for _, e in points], [100 * max(e) for _, e in points]
            ax.fill_between(ks, low, high, color=styles[label]["color"], alpha=0.15, lw=0)
        _error_panel(ax, panel_title, "k (blocks deleted at random)", bool(series))
    fig.suptitle(title)
    return _save(fig, path)


def _log_levels(values: Sequence[float], count: int = 24) -> list[float]:
    """``count`` log-spaced contour levels spanning ``values`` (all positive)."""
    low, high = min(values), max(values)
    high = max(high, low * 1.01)
    return [low * (high / low) ** (i / (count - 1)) for i in range(count)]


def landscape_contours(
    rows: Sequence[Sequence[tuple[str, Sequence[Sequence[float]]]]],
    coords: Sequence[float],
    path: Path,
    title: str,
) -> Path:
    """Filled contours of the loss over a 2-D slice, one panel per net in a grid of ``rows`` (e.g.
    [plain, residual] per depth), every panel on the same log-spaced levels and one colour bar, so
    the surfaces compare directly. Each grid is indexed [y][x] over ``coords`` on both axes."""
    from matplotlib.colors import LogNorm

    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(5 * cols + 1.5, 4.4 * len(rows)), squeeze=False, constrained_layout=True
    )
    values = [max(v, 1e-6) for r in rows for _, grid in r for line in grid for v in line if not math.isnan(v)]
    levels = _log_levels(values)
    norm = LogNorm(levels[0], levels[-1])
    filled = None
    for ax_row, row in zip(axes, rows, strict=True):
        for ax, (label, grid) in zip(ax_row, row, strict=False):
            z = [[min(max(v, levels[0]), levels[-1]) for v in line] for line in grid]
            filled = ax.contourf(coords, coords, z, levels=levels, norm=norm, cmap="viridis")
            ax.contour(coords, coords, z, levels=levels, colors="k", linewidths=0.4, alpha=0.5)
            ax.plot([0], [0], "w+", ms=10)
            ax.set_title(label)
            ax.set_aspect("equal")
            ax.set_xlabel("direction 1")
            ax.set_ylabel("direction 2")
        for ax in ax_row[len(row) :]:
            ax.axis("off")
    if filled is not None:
        bar = fig.colorbar(filled, ax=axes.ravel().tolist(), shrink=0.85)
        ticks = levels[::4]
        bar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
        bar.minorticks_off()
        bar.set_label("training loss (cross-entropy, log scale)")
    fig.suptitle(title)
    return _save(fig, path)


def landscape_lines(
    series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], path: Path, title: str
) -> Path:
    """1-D slices: loss (log scale, left) and training accuracy (right) against the step along one
    direction; ``series`` maps each label to (alphas, losses, accuracies as fractions)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = _styles(list(series))
    for label, (alphas, losses, accuracies) in series.items():
        left.plot(alphas, losses, label=label, **styles[label])
        right.plot(alphas, _percent(accuracies), label=label, **styles[label])
    left.set_yscale("log")
    left.set_ylabel("training loss (log scale)")
    right.set_ylabel("training accuracy (%)")
    for ax in (left, right):
        ax.set_xlabel("step along direction 1 (filter-normalised units)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def landscape_hessian_line(
    panels: Sequence[tuple[str, dict[str, tuple[Sequence[float], Sequence[float]]]]], path: Path, title: str
) -> Path:
    """|lambda_min / lambda_max| against the step along direction 1, a panel per title (e.g. a depth,
    its twins on one axis: plain dashed, residual solid); each panel maps a label to (alphas, ratios).
    The trained weights (0) are marked by a dotted line."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (name, series) in zip(axes[0], panels, strict=True):
        styles = _styles(list(series))
        for label, (alphas, ratios) in series.items():
            ax.plot(alphas, ratios, marker="o", ms=4, label=label, **styles[label])
        ax.axvline(0, color="gray", ls=":", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("step along direction 1 (filter-normalised units)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("|lambda_min / lambda_max|")
    fig.suptitle(title)
    return _save(fig, path)
