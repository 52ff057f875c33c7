"""A tiny program for the firmware tests: conv -> relu -> mean -> linear on 1x3x8x8, exported
for the portable kernels (a few kernels to compile, so a cold build stays short)."""

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
