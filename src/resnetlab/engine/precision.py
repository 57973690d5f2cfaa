"""The numeric mode of a run: precision (fp32 or bf16 autocast) and memory format, chosen for the device.

``auto`` means the fastest mode that computes the same thing: bf16 autocast and channels_last where
the device computes bf16 natively (CUDA GPUs with bf16; CPUs with AMX or AVX512-BF16, as torch
reports them), float32 elsewhere. On a CPU without native bf16 autocast emulates it and runs about
11x slower (AMD EPYC, AVX2 only: benchmarks/README.md), so the choice is made per machine, never
fixed. In float32 a GPU takes channels_last; a CPU takes it for nets without a strided 1x1
convolution (the option-A CIFAR nets) and keeps the contiguous layout for the others (see
:func:`choose_mode`), so the layout is chosen per net as well. Under bf16 autocast the
weights, the optimizer state, BN's statistics and the loss stay in float32: only the convolutions'
and the classifier's inputs are rounded to bf16.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from resnetlab.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


@dataclass(frozen=True)
class NumericMode:
    """A resolved mode: ``precision`` is fp32 or bf16, ``memory_format`` channels_last or contiguous,
    and ``reason`` says in words why (what was asked, what the device offers)."""

    precision: str
    memory_format: str
    reason: str

    @property
    def amp(self) -> str | None:
        """The autocast dtype name the training step takes (None: no autocast)."""
        return "bf16" if self.precision == "bf16" else None

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def describe(self) -> str:
        """One line for the start of a run's output."""
        return f"precision {self.precision}, {self.memory_format} ({self.reason})"


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and what says so (for the run's record)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return True, f"{name} computes bf16 natively"
        return False, f"{name} has no native bf16"
    if device.type == "cpu":
        # torch.cpu's probes (cpuinfo) are private API; a torch without them counts as "no".
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        features = [name for name, has in (("AMX", amx), ("AVX512-BF16", avx512_bf16)) if has]
        if features:
            return True, f"this CPU has {' and '.join(features)}"
        return False, "this CPU has neither AMX nor AVX512-BF16 (bf16 would be emulated, about 11x slower)"
    return False, f"bf16 autocast is not used on {device.type}"


def strided_1x1_convs(model: nn.Module) -> list[str]:
    """Names of the 1x1 convolutions of ``model`` with a stride other than 1 (option-B/C shortcuts,
    ImageNet bottlenecks): the layers whose channels_last backward torch 2.14 corrupts on a CPU."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and tuple(m.stride) != (1, 1)
    ]


def _cpu_fp32_layout(model: nn.Module | None) -> tuple[str, str]:
    """The layout ``auto`` gives a float32 run on a CPU, and why (for the run's first line)."""
    if model is None:
        return "contiguous", "contiguous: float32 on a CPU for a net not inspected"
    strided = strided_1x1_convs(model)
    if strided:
        more = f" and {len(strided) - 1} more" if len(strided) > 1 else ""
        return "contiguous", (
            f"contiguous: the net has strided 1x1 convolutions ({strided[0]}{more}), whose channels_last "
            "backward torch 2.14 corrupts on a CPU"
        )
    return (
        "channels_last",
        "channels_last: the net has no strided 1x1 convolution (1.1-1.2x faster in float32)",
    )


def choose_mode(
    device: torch.device,
    precision: str = "auto",
    memory_format: str = "auto",
    model: nn.Module | None = None,
) -> NumericMode:
    """Resolve ``auto`` for ``device`` (and, for the memory format of a float32 run on a CPU, for
    ``model``, which may live on the meta device); explicit choices win (bf16 where the device cannot
    run it at all is a :class:`UserError`)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if memory_format not in MEMORY_FORMATS:
        raise UserError(f"--memory-format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
    native, why = native_bf16(device)
    if precision == "bf16" and (device.type == "mps" or (device.type == "cuda" and not native)):
        raise UserError(f"--precision bf16 is not supported here: {why} (use --precision fp32)")
    reasons = []
    if precision == "auto":
        precision = "bf16" if native else "fp32"
        reasons.append(f"auto: {why}")
    else:
        reasons.append(f"--precision {precision} as asked")
    if memory_format == "auto":
        # channels_last with bf16 (CPU or GPU) and on CUDA: measured fastest there. A CPU in fp32 takes
        # it (1.1-1.2x) only for a net without strided 1x1 convolutions: torch 2.14's CPU backward of
        # narrow 1x1 stride-2 convolutions corrupts memory on channels_last input (see step.py), which
        # a default must never risk. A net not given is not inspected: contiguous. MPS: contiguous.
        if device.type == "cuda" or (precision == "bf16" and device.type == "cpu"):
            memory_format = "channels_last"
        elif device.type == "cpu":
            memory_format, why_layout = _cpu_fp32_layout(model)
            reasons.append(why_layout)
        else:
            memory_format = "contiguous"
    else:
        reasons.append(f"--memory-format {memory_format} as asked")
    return NumericMode(precision, memory_format, "; ".join(reasons))


def add_mode_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--memory-format`` (default None: auto, so that resume can tell them given)."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (default): bf16 autocast where the device computes bf16 natively (CUDA with bf16, CPUs "
        "with AMX or AVX512-BF16), fp32 elsewhere",
    )
    parser.add_argument(
        "--memory-format",
        choices=MEMORY_FORMATS,
        help="auto (default): channels_last on CUDA, with bf16, and in float32 on a CPU for nets without "
        "a strided 1x1 convolution (measured faster); else contiguous",
    )
