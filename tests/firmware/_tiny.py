"""Tiny programs for the firmware tests, exported for the portable kernels (a few kernels to
compile, so a cold build stays short): conv -> relu -> mean -> linear on 1x3x8x8, and a Tent
adapter's inference and training programs at batch 2 (the QEMU bridge test)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

SHAPE = (1, 3, 8, 8)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def export_tiny(path: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """(the .pte, two inputs, eager outputs for them)."""
    from executorch.exir import to_edge

    torch.manual_seed(0)
    model = Tiny().eval()
    inputs = torch.randn(2, *SHAPE[1:])
    program = to_edge(torch.export.export(model, (inputs[:1],))).to_executorch()
    path.write_bytes(program.buffer)
    with torch.no_grad():
        expected = torch.cat([model(inputs[i : i + 1]) for i in range(2)])
    return path, inputs, expected


ADAPT_SHAPE = (2, 3, 8, 8)  # the adapting programs' batch: 2 frames per SGD step
ADAPT_LR = 1e-2


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip


def export_tiny_adapter(folder: Path) -> dict:
    """A Tent adapter (plain SGD, as the device steps it) on a one-conv network with a BN, its
    inference program (portable kernels) and its training program at batch 2; and the
    adapter's state when the training program was captured, so an eager replay starts where
    the device does."""
    import copy

    import edgeadapt
    from edgeadapt.export import to_executorch, to_training_program

    x = torch.randn(ADAPT_SHAPE, generator=torch.Generator().manual_seed(0))
    config = edgeadapt.config_for("tent", optimizer="sgd", momentum=0.0, lr=ADAPT_LR)
    adapter = edgeadapt.wrap(tiny_net(), config, example_input=x)
    initial = copy.deepcopy(adapter.state_dict())
    train = to_training_program(adapter, x, folder / "train.pte").path
    infer = to_executorch(adapter, x, folder / "infer.pte", backend="portable").path
    return {"adapter": adapter, "initial": initial, "infer": infer, "train": train}
