"""Fig. 7's claim and its verdict rule, shared by both forms of ``reproduce responses``: nets trained
here (:mod:`resnetlab.experiments.responses`) and given trained nets (:mod:`.responses_nets`)."""

from __future__ import annotations

from resnetlab.reporting.report import Verdict

CLAIM = (
    "The std of the 3x3 layers' responses (after BN, before ReLU/addition) on the CIFAR-10 test set is "
    "generally smaller in ResNets than in their plain counterparts, and smaller in deeper ResNets than "
    "in shallower ones: residual functions are closer to zero than non-residual ones (Fig. 7)."
)
CLEAR_RATIO = 0.95  # a mean response this fraction of the other's (or less) counts as smaller


def smaller(small: tuple[str, float], large: tuple[str, float], claim: str, short: bool) -> Verdict:
    """A verdict on "``small``'s mean response is smaller than ``large``'s" ((label, mean std) each);
    ``short`` (a budget too short to tell) makes a near tie inconclusive instead of not reproduced."""
    (s_label, s), (l_label, big) = small, large
    text = f"mean response std {s_label} {s:.3f} vs {l_label} {big:.3f}"
    if s <= CLEAR_RATIO * big:
        return Verdict(f"{text}: {claim} reproduced", True)
    if short and s <= big / CLEAR_RATIO:  # within the band either side of equal
        return Verdict(f"{text}: no clear difference yet; the budget is too short to tell", None)
    return Verdict(f"{text}: {claim} not reproduced", False)
