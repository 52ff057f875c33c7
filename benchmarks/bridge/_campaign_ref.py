"""The fault campaign's programs and its host reference: what the device must hold and answer.

Tiny programs (a one-conv Tent network, batch 4 of 3x8x8, as in tests/bridge): thousands of
operations need steps of milliseconds, and the protocol paths under test do not depend on the
model's size (ResNet-20 is what benchmarks/bridge/run.py measures).
"""

from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state, state_to_blob
from edgeadapt.firmware_bridge.emulator.programs import program_parameters, with_parameters

SHAPE = (4, 3, 8, 8)
LR = 1e-2


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip


@dataclass(frozen=True)
class Programs:
    infer: tuple[bytes, bytes]  # two inference programs (old/new versions)
    train: tuple[bytes, bytes]  # two training programs with the same parameter shapes
    adapters: tuple[bytes, bytes]  # two adapter blobs that fit both training programs


def build_programs() -> Programs:
    import edgeadapt
    from edgeadapt.export import to_executorch, to_training_program

    folder = Path(tempfile.mkdtemp(prefix="bridge-campaign-"))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    infer, train = [], []
    for seed in (0, 1):
        adapter = edgeadapt.wrap(_net(seed), edgeadapt.config_for("tent", lr=LR),
                                 example_input=x[:2])  # fmt: skip
        infer.append(to_executorch(adapter, x, folder / f"infer{seed}.pte",
                                   backend="portable").path.read_bytes())  # fmt: skip
        train.append(to_training_program(adapter, x, folder / f"train{seed}.pte").path.read_bytes())
    own = program_parameters(train[0])
    gen = torch.Generator().manual_seed(5)
    adapters = tuple(
        state_to_blob({k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in own.items()})
        for _ in range(2)
    )
    return Programs(tuple(infer), tuple(train), adapters)


def crc(data: bytes | None) -> int:
    return zlib.crc32(data) if data is not None else 0


class Reference:
    """The device as it must be: committed bytes per target, and the adaptation state
    stepped by a host TrainingRunner from the same start the device uses (§3.7)."""

    def __init__(self, lr: float = LR) -> None:
        self.lr = lr
        self.program: bytes | None = None
        self.training: bytes | None = None
        self.adapter: bytes | None = None  # committed blob, as uploaded
        self._runners: dict[int, object] = {}
        self.reset()

    def reset(self) -> None:
        """RESET ADAPTER, a commit of TRAINING/ADAPTER, or a reboot."""
        from edgeadapt.export import TrainingRunner

        self.step, self.primed, self.trainer = 0, False, None
        if self.training is not None:
            data = self.training
            if self.adapter is not None:
                data = with_parameters(data, blob_to_state(self.adapter))
            self.trainer = TrainingRunner.from_bytes(data, lr=self.lr)

    def commit(self, target: int, data: bytes) -> None:
        if target == 0:
            self.program = data
            return
        if target == 2:
            self.training = data  # the campaign's adapters fit both programs: kept
        else:
            self.adapter = data
        self.reset()

    def crcs(self) -> tuple[int, int, int]:
        return crc(self.program), crc(self.training), crc(self.adapter)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        from edgeadapt.export.executorch_program import ExecuTorchRunner

        key = crc(self.program)
        if key not in self._runners:
            self._runners[key] = ExecuTorchRunner.from_bytes(self.program)
        return self._runners[key].run(x)

    def adapt(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        logits, loss, _ = self.trainer.step(x)
        self.primed = True
        self.step += 1
        return logits, loss

    def parameters(self) -> dict[str, torch.Tensor]:
        if self.primed:
            return self.trainer.parameters()
        if self.adapter is not None:
            return blob_to_state(self.adapter)
        return program_parameters(self.training)

    def adapter_blob(self) -> bytes:
        return state_to_blob(self.parameters())
