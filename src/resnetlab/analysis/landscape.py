"""Loss landscapes around trained weights (Li, Xu, Taylor, Studer & Goldstein 2018) and the Hessian's
extreme eigenvalues.

Directions are *filter-normalised* random directions: a Gaussian direction d has each filter d[i]
(a conv's output channel, a linear layer's output row) rescaled to the norm of the same filter of
the trained weights, d[i] <- d[i] * ||w[i]|| / ||d[i]||. That removes the scale invariance of
ReLU+BN nets, so surfaces of different nets can be compared side by side. Parameters with one
dimension (BN weights and biases, the fc bias) get a zero direction: Li et al.'s default
("ignore biasbn"), so they stay at their trained values. BN runs in eval mode throughout, on its
running statistics, which :func:`scan` checks are untouched.

The Hessian's extreme eigenvalues come from Hessian-vector products (double backpropagation, fp32)
fed to Lanczos iteration (:func:`lanczos`). Lanczos is power iteration's better sibling here: its
Krylov space contains every power-iteration iterate from the same start, so its largest Ritz value
is at least as close to lambda_max, and the same few products give lambda_min too, where power
iteration would need a second run on the shifted operator H - lambda_max I.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]
EPS = 1e-10  # keeps a zero filter (a pruned channel) from dividing by zero


# ---- directions ---------------------------------------------------------------------------------


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction in ``model``'s parameter space, filter-normalised (Li et al. 2018, Eq. 1).

    One tensor per named parameter: Gaussian for conv and linear weights, each filter (slice along
    the first dimension) rescaled to the norm of the matching filter of the weights; zero for
    one-dimensional parameters (BN weights and biases, biases). ``generator`` (CPU) makes it seeded.
    """
    direction = {}
    for name, w in model.named_parameters():
        w = w.detach()
        if w.dim() <= 1:
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w)
        scale = w.flatten(1).norm(dim=1) / (d.flatten(1).norm(dim=1) + EPS)
        direction[name] = d * scale.view(-1, *([1] * (w.dim() - 1)))
    return direction


# ---- scanning the loss --------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """Mean cross-entropy loss and top-1 accuracy of the net at one point of a scan."""

    loss: float
    accuracy: float


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_buffers()}


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: Sequence[Batch], autocast: bool = False) -> Point:
    """Mean cross-entropy and top-1 accuracy of ``model`` (as it is: call in eval mode) on ``batches``."""
    total, correct, images = 0.0, 0, 0
    for x, y in batches:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        total += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        images += y.shape[0]
    return Point(total / images, correct / images)


@torch.no_grad()
def scan(
    model: nn.Module,
    directions: Sequence[dict[str, torch.Tensor]],
    coordinates: Iterable[Sequence[float]],
    batches: Sequence[Batch],
    *,
    autocast: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Point]:
    """The loss and accuracy at ``w + sum_i c_i d_i`` for every coordinate tuple ``c`` (one number per
    direction), ``w`` the trained weights; e.g. ``[(a,) for a in alphas]`` for a 1-D line.

    BN is in eval mode with its running statistics throughout; the weights are restored and the
    model left in the mode it came in afterwards. Raises RuntimeError if any buffer (BN running
    mean, variance, count) changed during the scan: the surface would not be the trained net's.
    ``progress(i)`` is called after point ``i``.
    """
    points = []
    with _moving(model, directions) as move_to:
        for i, c in enumerate(coordinates):
            move_to(c)
            points.append(evaluate_loss(model, batches, autocast))
            if progress is not None:
                progress(i)
    return points


@contextmanager
def _moving(
    model: nn.Module, directions: Sequence[dict[str, torch.Tensor]]
) -> Iterator[Callable[[Sequence[float]], None]]:
    """Within the block, ``move_to(c)`` puts ``model``'s parameters at ``w + sum_i c_i d_i``, ``w``
    the weights it came in with, and the model is in eval mode; afterwards ``w`` is restored bit for
    bit and the mode it came in. Raises RuntimeError if any buffer (BN running mean, variance,
    count) changed meanwhile: what was measured would not be the trained net's."""
    params = dict(model.named_parameters())
    trained = {k: p.detach().clone() for k, p in params.items()}
    before = _buffers(model)
    was_training = model.training

    @torch.no_grad()
    def move_to(c: Sequence[float]) -> None:
        if len(c) != len(directions):
            raise ValueError(f"coordinate {tuple(c)} needs one number per direction ({len(directions)})")
        for name, p in params.items():
            p.copy_(trained[name])
            for ci, d in zip(c, directions, strict=True):
                p.add_(d[name], alpha=float(ci))

    model.eval()
    try:
        yield move_to
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(trained[name])
        model.train(was_training)
    drifted = [k for k, v in _buffers(model).items() if not torch.equal(v, before[k])]
    if drifted:
        raise RuntimeError(f"BN statistics changed during the scan: {', '.join(drifted[:3])}")


# ---- Hessian ------------------------------------------------------------------------------------


def model_loss_terms(model: nn.Module, batches: Sequence[Batch]) -> Callable[[], Iterable[torch.Tensor]]:
    """Terms that sum to the mean cross-entropy of ``model`` over ``batches`` (one per batch), in fp32
    and eval mode: the function whose Hessian :func:`hessian_operator` multiplies by."""
    images = sum(y.shape[0] for _, y in batches)

    def terms() -> Iterable[torch.Tensor]:
        for x, y in batches:
            yield F.cross_entropy(model(x).float(), y, reduction="sum") / images

    return terms


def hessian_operator(
    loss_terms: Callable[[], Iterable[torch.Tensor]], params: Sequence[torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> H v for the Hessian H of ``sum(loss_terms())`` with respect to ``params``, flat vectors.

    Each product is exact (double backpropagation), summed term by term so that only one term's
    graph is alive at a time.
    """
    params = list(params)
    sizes = [p.numel() for p in params]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        parts = [t.view_as(p).to(p.dtype) for t, p in zip(v.split(sizes), params, strict=True)]
        out = torch.zeros(sum(sizes), dtype=torch.float64, device=v.device)
        for term in loss_terms():
            grads = torch.autograd.grad(term, params, create_graph=True, materialize_grads=True)
            dot = sum((g * u).sum() for g, u in zip(grads, parts, strict=True))
            if not dot.requires_grad:
                continue  # this term is linear in the parameters: it adds nothing to H
            hv = torch.autograd.grad(dot, params, materialize_grads=True)
            out += torch.cat([h.flatten() for h in hv]).to(out)
        return out

    return matvec


@dataclass(frozen=True)
class Extremes:
    """The extreme eigenvalues of a symmetric operator from Lanczos, with their residual bounds.

    For each Ritz pair (theta, y) some eigenvalue lies within ``residual`` of theta; the smallest Ritz
    value is never below the true lambda_min (and the largest never above lambda_max), so an
    unconverged lambda_min errs towards zero.
    """

    lambda_max: float
    lambda_min: float
    residual_max: float
    residual_min: float
    steps: int
    history: list[tuple[float, float]]  # (lambda_max, lambda_min) estimates after each step: convergence

    @property
    def ratio(self) -> float:
        """|lambda_min / lambda_max|: Li et al.'s measure of non-convexity (0 for a convex bowl)."""
        return abs(self.lambda_min / self.lambda_max) if self.lambda_max else float("inf")


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    steps: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Extremes:
    """Extreme eigenvalues of the symmetric operator ``matvec`` on R^dim after ``steps`` Lanczos steps
    (full reorthogonalisation, float64), starting from a seeded random vector."""
    if steps < 1:
        raise ValueError(f"Lanczos needs at least one step, got {steps}")
    steps = min(steps, dim)
    basis = torch.zeros(steps + 1, dim, dtype=torch.float64, device=device)
    q = torch.randn(dim, generator=generator, dtype=torch.float64).to(device)
    basis[0] = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    history: list[tuple[float, float]] = []
    for j in range(steps):
        w = matvec(basis[j]).to(torch.float64)
        alphas.append(float(w @ basis[j]))
        # Full reorthogonalisation against every earlier vector, twice (Kahan's "twice is enough"):
        # without it rounding makes copies of converged Ritz values appear.
        done = basis[: j + 1]
        for _ in range(2):
            w = w - done.T @ (done @ w)
        betas.append(float(w.norm()))
        theta = torch.linalg.eigvalsh(_tridiagonal(alphas, betas[:-1]))
        history.append((float(theta[-1]), float(theta[0])))
        if betas[-1] <= 1e-12 * max(1.0, max(abs(a) for a in alphas)):
            break  # an invariant subspace: the Ritz values are exact eigenvalues
        basis[j + 1] = w / betas[-1]
    m = len(alphas)
    theta, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas[: m - 1]))
    bounds = (betas[m - 1] * vectors[-1]).abs()
    return Extremes(float(theta[-1]), float(theta[0]), float(bounds[-1]), float(bounds[0]), m, history)


def _tridiagonal(alphas: list[float], betas: list[float]) -> torch.Tensor:
    """The Lanczos matrix T: ``alphas`` on the diagonal, ``betas`` beside it."""
    off = torch.tensor(betas, dtype=torch.float64)
    return torch.diag(torch.tensor(alphas, dtype=torch.float64)) + torch.diag(off, 1) + torch.diag(off, -1)


def hessian_extremes(
    model: nn.Module, batches: Sequence[Batch], steps: int, generator: torch.Generator
) -> Extremes:
    """lambda_max and lambda_min of the Hessian of ``model``'s mean loss on ``batches`` at its current
    weights (all parameters, fp32, BN in eval mode); the model's mode is restored."""
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        matvec = hessian_operator(model_loss_terms(model, batches), params)
        device = params[0].device
        return lanczos(matvec, sum(p.numel() for p in params), steps, generator, device)
    finally:
        model.train(was_training)


def hessian_line(
    model: nn.Module,
    direction: dict[str, torch.Tensor],
    alphas: Sequence[float],
    batches: Sequence[Batch],
    steps: int,
    generator: Callable[[], torch.Generator],
    centre: Extremes | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Extremes]:
    """:func:`hessian_extremes` at ``w + a d`` for every ``a`` of ``alphas`` (Li et al.'s map of
    |lambda_min / lambda_max| off the trained weights ``w``, along one direction), each from a fresh
    ``generator()`` (the same start vector at every point, where it returns the same generator).

    At ``a == 0`` the result is ``centre`` where given: the measurement at ``w``, not made again.
    The weights are restored bit for bit and the model left in its mode; BN runs in eval mode on
    its running statistics, checked untouched as in :func:`scan`. ``progress(i)`` after point ``i``.
    """
    out = []
    with _moving(model, [direction]) as move_to:
        for i, a in enumerate(alphas):
            if a == 0 and centre is not None:
                out.append(centre)
            else:
                move_to((a,))
                out.append(hessian_extremes(model, batches, steps, generator()))
            if progress is not None:
                progress(i)
    return out
