"""The confusion matrix of an evaluation drawn as a PNG (``resnetlab eval``)."""

from __future__ import annotations

from pathlib import Path

from resnetlab.atomic import atomic_open


def save_confusion_png(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """A confusion-matrix heat map (rows true class, columns prediction) as a PNG, written atomically."""
    from matplotlib.figure import Figure

    n = len(classes)
    fig = Figure(figsize=(2 + 0.45 * n, 1.5 + 0.45 * n) if n <= 30 else (10, 9))
    ax = fig.add_subplot()
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=100)
