"""The programs a device holds, run by the ExecuTorch runtime, and their memory budget.

`Programs` keeps the committed bytes of the inference program, the training program and the
adapter, the loaded runtimes, and checks each new program against the device profile before
it may replace the old one: its memory plan (arenas + constants, read from the .pte) together
with whatever else stays resident must pass `edgeadapt.export.check_fit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..protocol import Target
from .adapter_blob import blob_to_state, state_to_blob

__all__ = ["Budget", "Loaded", "Programs"]


@dataclass(frozen=True)
class Loaded:
    """One program, loaded: its runner, input shape and memory plan."""

    data: bytes
    runner: Any  # ExecuTorchRunner or TrainingRunner
    input_shape: tuple[int, ...]
    arenas: tuple[int, ...]
    constants: int

    @property
    def batch(self) -> int:
        return self.input_shape[0] if self.input_shape else 1


class Budget(Exception):
    """A program does not fit: `missing` bytes, `message` from check_fit."""

    def __init__(self, message: str, missing: int) -> None:
        super().__init__(message)
        self.missing = missing


class Programs:
    """Inference + training programs and the adapter, for one device profile."""

    def __init__(self, profile: Any, *, lr: float) -> None:
        self.profile = profile
        self.lr = lr  # SGD step size of ADAPT (a firmware build constant)
        self.loaded: dict[int, Loaded] = {}
        self.initial_adapter: dict[str, Tensor] | None = None  # training program's own weights
        self.committed_adapter: dict[str, Tensor] | None = None  # last SET_ADAPTER

    def load(self, target: int, data: bytes) -> Loaded:
        """Parse and load `data` as the program for `target` (not yet active); raises
        ProgramFileError when it cannot be loaded, Budget when it does not fit."""
        from edgeadapt.export.executorch_program import ExecuTorchRunner, program_memory
        from edgeadapt.export.fit import check_fit
        from edgeadapt.export.training import TrainingRunner

        arenas, constants = program_memory(data)
        others = [p for t, p in self.loaded.items() if t != target]
        # Both programs stay resident, so their arenas are planned side by side.
        sizes = {
            "arena_bytes": [*arenas, *(a for p in others for a in p.arenas)],
            "constant_bytes": constants + sum(p.constants for p in others),
        }
        fit = check_fit(sizes, self.profile)
        if not fit.fits:
            raise Budget(fit.message, fit.missing_bytes)
        if target == Target.TRAINING:
            runner = TrainingRunner.from_bytes(data, lr=self.lr)
            # The runtime exposes the weights only after a first run; a dry step on zeros
            # (gradients computed, never applied) also proves the program runs at all.
            runner.forward_backward(torch.zeros(runner.input_shape))
        else:
            runner = ExecuTorchRunner.from_bytes(data)
        shape = runner.input_shape
        return Loaded(data, runner, shape, tuple(arenas), constants)

    def activate(self, target: int, loaded: Loaded) -> None:
        """The atomic switch: the new program replaces the old in one assignment."""
        self.loaded[target] = loaded
        if target == Target.TRAINING:
            self.initial_adapter = loaded.runner.parameters()
            if self.committed_adapter is not None:
                self._write_params(self.committed_adapter, check=False)

    def program(self, target: int) -> Loaded | None:
        return self.loaded.get(target)

    def set_adapter(self, blob: bytes) -> None:
        """Check a pushed adapter against the training program and copy it in."""
        state = blob_to_state(blob)
        if Target.TRAINING in self.loaded:
            self._write_params(state, check=True)
        self.committed_adapter = state

    def reset_adapter(self) -> None:
        state = self.committed_adapter or self.initial_adapter
        if state is not None and Target.TRAINING in self.loaded:
            self._write_params(state, check=False)

    def adapter_blob(self) -> bytes | None:
        train = self.loaded.get(Target.TRAINING)
        if train is not None:
            return state_to_blob(train.runner.parameters())
        return state_to_blob(self.committed_adapter) if self.committed_adapter else None

    def _write_params(self, state: dict[str, Tensor], *, check: bool) -> None:
        self.loaded[Target.TRAINING].runner.load_parameters(state, strict=check)

    def run_inference(self, x: Tensor) -> Tensor:
        return self.loaded[Target.PROGRAM].runner.run(x)

    def run_step(self, x: Tensor) -> tuple[Tensor, float, int]:
        return self.loaded[Target.TRAINING].runner.step(x)
