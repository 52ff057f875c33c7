"""Tiny programs for the emulator tests, exported once per test process.

A Tent adapter on a one-conv network with a BN: the smallest model that has both an
inference program and a training program (ResNet-sized ones belong in benchmarks/bridge).
"""

from __future__ import annotations

import atexit
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

SHAPE = (4, 3, 8, 8)  # the programs' fixed input: a batch of 4 RGB 8x8 images
LR = 1e-2


@dataclass(frozen=True)
class TinyPrograms:
    folder: Path
    infer: bytes  # inference program (portable kernels)
    train: bytes  # one Tent step
    plain: bytes  # the same network without adaptation (another valid inference program)
    big: bytes  # a plain conv on 3x256x256: its arena does not fit an STM32H743's banks
    initial: dict[str, torch.Tensor]  # the trainable weights the programs were made from


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip


@functools.lru_cache(maxsize=1)
def tiny_programs() -> TinyPrograms:
    import edgeadapt
    from edgeadapt.export import to_executorch, to_training_program

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small graphs: extra threads only contend on a loaded CI box
    try:
        folder = Path(tempfile.mkdtemp(prefix="edgeadapt-emulator-test-"))
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
        adapter = edgeadapt.wrap(_net(), edgeadapt.config_for("tent", lr=LR), example_input=x[:2])
        initial = {k: p.detach().clone() for k, p in adapter.model.named_parameters()
                   if p.requires_grad}  # fmt: skip
        infer = to_executorch(adapter, x, folder / "infer.pte", backend="portable").path
        train = to_training_program(adapter, x, folder / "train.pte").path
        plain = to_executorch(_net().eval(), x, folder / "plain.pte", backend="portable").path
        big_x = torch.zeros(1, 3, 256, 256)
        big = to_executorch(nn.Conv2d(3, 4, 3, padding=1), big_x, folder / "big.pte",
                            backend="portable").path  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return TinyPrograms(
        folder,
        infer.read_bytes(),
        train.read_bytes(),
        plain.read_bytes(),
        big.read_bytes(),
        initial,
    )


def batches(n: int, seed: int = 1) -> list[torch.Tensor]:
    """A shifted, noisy stream, so Tent has something to adapt to."""
    gen = torch.Generator().manual_seed(seed)
    return [1.5 * torch.randn(SHAPE, generator=gen) + 0.3 for _ in range(n)]


@functools.lru_cache(maxsize=1)
def shared_emulator():
    """One emulator process for every test module (it takes seconds to boot), started before
    the programs export so the two overlap; closed when the test process exits."""
    from edgeadapt.firmware_bridge.emulator import EmulatorProcess

    emu = EmulatorProcess("stm32h743", f"--lr={LR}")
    atexit.register(emu.close)
    return emu
