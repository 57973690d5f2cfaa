"""The training engine: config, one SGD step, schedules, checkpoints, torchrun, the training loop
for one net or a fleet of nets side by side.

The names below are imported on first use, not with the package: loading a checkpoint
(``engine.checkpoint``) or evaluating a net (``engine.evaluate``) imports this package too, and must
not pull in the trainer, its run lock and the OS locking module (``fcntl``) that inference never uses.
The evaluation function is ``resnetlab.engine.evaluate.evaluate``: ``resnetlab.engine.evaluate`` is
its module, which a lazily exported function of the same name would shadow or be shadowed by.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the engine module that defines it.
_EXPORTS = {
    "DivergedError": "trainer",
    "TrainConfig": "config",
    "TrainResult": "trainer",
    "TrainStep": "step",
    "build_data": "trainer",
    "probe_fleet": "trainer",
    "train": "trainer",
    "train_fleet": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the module of a public name when the name is first asked for (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
