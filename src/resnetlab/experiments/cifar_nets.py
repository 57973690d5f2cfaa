"""The paper's CIFAR networks as the reproductions name them: depth 6n+2, plain or residual, and the
shortcut option A/B/C; each one's run folder name, its label in figures and its registered model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resnetlab.errors import UserError
from resnetlab.models import ResNet, build_model, list_models, model_info


@dataclass(frozen=True)
class CifarNet:
    """A CIFAR network of the paper: depth 6n+2, plain or residual, shortcut option A/B/C."""

    depth: int
    residual: bool
    shortcut: str = "A"

    def __post_init__(self) -> None:
        check_depth(self.depth)

    @property
    def name(self) -> str:
        """File-system name: plain-20, resnet-56, resnet-20-B."""
        base = f"{'resnet' if self.residual else 'plain'}-{self.depth}"
        return base if self.shortcut == "A" else f"{base}-{self.shortcut}"

    @property
    def label(self) -> str:
        """Name in figures and tables, as the paper writes it: plain-20, ResNet-56, ResNet-20 (B)."""
        base = f"{'ResNet' if self.residual else 'plain'}-{self.depth}"
        return base if self.shortcut == "A" else f"{base} ({self.shortcut})"

    def model(self) -> tuple[str, dict[str, Any]]:
        """(registered name, overrides) for the engine; unregistered depths override the layers."""
        name = f"{'resnet' if self.residual else 'plain'}{self.depth}"
        overrides: dict[str, Any] = {} if self.shortcut == "A" else {"shortcut": self.shortcut}
        if name not in list_models():
            name = "resnet20" if self.residual else "plain20"
            overrides["layers"] = [(self.depth - 2) // 6] * 3
        return name, overrides

    def build(self, num_classes: int = 10) -> ResNet:
        """A freshly initialised network (He init, as the engine builds it)."""
        name, overrides = self.model()
        return build_model(name, num_classes=num_classes, **overrides)


def net_of(model: str, overrides: dict[str, Any]) -> CifarNet | None:
    """The paper's CIFAR net that registered ``model`` with ``overrides`` builds, or None when it is
    another network (an ImageNet net, other widths, an unequal number of blocks per stage)."""
    info = model_info(model)
    layers = list(overrides.get("layers", info.spec["layers"]))
    if info.family != "cifar" or len(set(layers)) != 1:
        return None
    net = CifarNet(6 * layers[0] + 2, bool(info.spec["residual"]), overrides.get("shortcut", "A"))
    given = {k: list(v) if k == "layers" else v for k, v in overrides.items()}
    return net if net.model() == (model, given) else None


def check_depth(depth: int) -> int:
    """``depth`` if it is a CIFAR depth 6n+2 (n >= 1), else a UserError."""
    if depth < 8 or (depth - 2) % 6:
        raise UserError(f"CIFAR nets have depth 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
    return depth


def parse_depths(text: str, count: int | None = None) -> tuple[int, ...]:
    """'20,56' -> (20, 56), each checked; ``count`` demands exactly that many."""
    try:
        depths = tuple(dict.fromkeys(int(d) for d in text.split(",") if d.strip()))
    except ValueError:
        raise UserError(f"--depths must be comma-separated integers like 20,56, got {text!r}") from None
    if not depths or (count is not None and len(depths) != count):
        raise UserError(f"--depths needs {count or 'at least one'} depth(s), got {text!r}")
    return tuple(check_depth(d) for d in depths)
