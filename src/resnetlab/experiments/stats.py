"""Statistics over seeds, and when one error is clearly above another."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

MIN_GAP = 0.01  # smallest error difference (fraction) we call a difference, whatever the seeds say


@dataclass(frozen=True)
class Stat:
    """Mean and sample std of a quantity over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        """The statistics of ``values`` (std 0 for a single value)."""
        return cls(
            statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)
        )

    def __str__(self) -> str:
        """As a percentage (errors are fractions): '62.00%' or '62.00 ± 1.20%' over several seeds."""
        if self.n == 1:
            return f"{100 * self.mean:.2f}%"
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}%"


def clearly_above(high: Stat, low: Stat) -> bool:
    """True when ``high`` exceeds ``low`` by more than MIN_GAP and more than their seed stds together."""
    return high.mean - low.mean > max(MIN_GAP, high.std + low.std)
