"""The programs a device holds, run by the ExecuTorch runtime, and their memory budget.

`Programs` keeps the loaded inference program, the loaded training program and the adapter
state, and checks each new program before it may replace the old one: its role (an inference
program has `forward` alone; a training program also has the `__et_training_*` methods), and
its memory plan (arenas + constants, read from the .pte) together with whatever else stays
resident must pass `edgeadapt.export.check_fit`.

Adapter state. The training program holds trainable parameters and may write buffers (BN
stream statistics, a mean teacher): both live in its memory. The device's adaptation state
starts from the program's own buffers and the committed adapter's parameters (or the
program's own), and only ADAPT steps move it. The runtime exposes parameters only after a
first run, and a run writes the buffers, so the committed parameters are written into the
program's initial data instead (`with_parameters`), as a firmware writes them into its
planned memory before the first step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..protocol import Target
from .adapter_blob import blob_to_state, state_to_blob

__all__ = [
    "Budget",
    "Loaded",
    "Programs",
    "WrongRole",
    "program_parameters",
    "program_role",
    "with_parameters",
]

TRAINING_METHODS = frozenset({"__et_training_fqn_forward", "__et_training_gradients_index_forward",
                              "__et_training_parameters_index_forward"})  # fmt: skip
PREFIX = "model."  # TrainingRunner.parameters() names them without it (as adapter.model does)


@dataclass(frozen=True)
class Loaded:
    """One program, loaded: its runner, input shape and memory plan."""

    data: bytes
    runner: Any  # ExecuTorchRunner or TrainingRunner
    input_shape: tuple[int, ...]
    arenas: tuple[int, ...]
    constants: int
    seconds: float  # one run, measured at commit or at the first run after a boot (0: not yet)

    @property
    def batch(self) -> int:
        return self.input_shape[0] if self.input_shape else 1


class Budget(Exception):
    """A program does not fit: `missing` bytes, `message` from check_fit."""

    def __init__(self, message: str, missing: int) -> None:
        super().__init__(message)
        self.missing = missing


class WrongRole(Exception):
    """A program uploaded for the other role; `fits` is the target it would suit."""

    def __init__(self, message: str, fits: int) -> None:
        super().__init__(message)
        self.fits = fits


def _pte(data: bytes):
    from executorch.exir._serialize._program import deserialize_pte_binary

    from edgeadapt.export.errors import ProgramFileError

    try:
        return deserialize_pte_binary(data)
    except Exception as exc:
        raise ProgramFileError(f"not an ExecuTorch program ({type(exc).__name__}: {exc})") from exc


def program_role(data: bytes) -> Target:
    """TRAINING for a program with the three training methods and a `forward` whose outputs
    they describe (loss, logits, kept, P gradients, P parameters); PROGRAM (inference) for
    one with none of them whose `forward` takes the batch alone. Anything in between is a
    ProgramFileError: run as the other role it would give wrong answers, not fail."""
    from edgeadapt.export.errors import ProgramFileError

    plans = {plan.name: plan for plan in _pte(data).program.execution_plan}
    forward = plans.get("forward")
    if forward is None:
        raise ProgramFileError(f"the program has no 'forward' method (methods: {sorted(plans)})")
    found = TRAINING_METHODS & plans.keys()
    if not found:
        if len(forward.inputs) != 1:
            raise ProgramFileError(f"an inference program's forward takes the batch alone; "
                                   f"this one takes {len(forward.inputs)} inputs")  # fmt: skip
        return Target.PROGRAM
    if found != TRAINING_METHODS:
        raise ProgramFileError(f"the program has {sorted(found)} but not "
                               f"{sorted(TRAINING_METHODS - found)}: neither role")  # fmt: skip
    n = len(plans["__et_training_fqn_forward"].outputs)
    index = [plans[f"__et_training_{k}_index_forward"].values[0].val.int_val
             for k in ("gradients", "parameters")]  # fmt: skip
    if index != [3, 3 + n] or len(forward.outputs) != 3 + 2 * n:
        raise ProgramFileError(f"forward's {len(forward.outputs)} outputs do not match its "
                               f"training methods ({n} parameters, indices {index})")  # fmt: skip
    return Target.TRAINING


def _parameter_tensors(pte) -> list[tuple[str, Any]]:
    """(name, schema Tensor) of a training program's parameters, in its output order."""
    plans = {plan.name: plan for plan in pte.program.execution_plan}
    forward = plans["forward"]
    start = plans["__et_training_parameters_index_forward"].values[0].val.int_val
    names = [v.val.string_val for v in plans["__et_training_fqn_forward"].values]
    out = []
    for name, index in zip(names, forward.outputs[start:]):
        name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
        out.append((name, forward.values[index].val))
    return out


def _storage(pte, tensor) -> list:
    """The buffer list a tensor's initial data lives in (planned: mutable data)."""
    return pte.mutable_data if tensor.allocation_info is not None else pte.program.constant_buffer


def program_parameters(data: bytes) -> dict[str, Tensor]:
    """A training program's trainable parameters as exported (no run needed)."""
    pte = _pte(data)
    state = {}
    for name, t in _parameter_tensors(pte):
        raw = bytes(_storage(pte, t)[t.data_buffer_idx].storage)
        state[name] = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy()).view(list(t.sizes))
    return state


def with_parameters(data: bytes, state: dict[str, Tensor]) -> bytes:
    """The training program with its trainable parameters starting at `state` (names and shapes
    as `program_parameters`); buffers keep their exported initial values. Each parameter gets
    a buffer of its own: the exporter shares identical initial data between tensors (a BN
    weight of ones and a running_var of ones), which must not change together."""
    from executorch.exir._serialize._program import serialize_pte_binary
    from executorch.exir.schema import Buffer

    pte = _pte(data)
    for name, t in _parameter_tensors(pte):
        value = state[name].detach().to(torch.float32).contiguous()
        if list(value.shape) != list(t.sizes):
            raise ValueError(f"{name}: shape {list(value.shape)}, the program has {list(t.sizes)}")
        store = _storage(pte, t)
        store.append(Buffer(storage=value.numpy().astype("<f4").tobytes()))
        t.data_buffer_idx = len(store) - 1
    return bytes(serialize_pte_binary(pte))


class Programs:
    """Inference + training programs and the adapter state, for one device profile."""

    def __init__(self, profile: Any, *, lr: float) -> None:
        self.profile = profile
        self.lr = lr  # SGD step size of ADAPT (a firmware build constant)
        self.loaded: dict[int, Loaded] = {}
        self.initial: dict[str, Tensor] | None = None  # the training program's own parameters
        self.committed: dict[str, Tensor] | None = None  # last SET_ADAPTER
        self.trainer: Any = None  # the live TrainingRunner (RAM)
        self.primed = False  # the trainer has run, so its parameters are readable

    # -- checking and loading ---------------------------------------------------------------

    def load(self, target: int, data: bytes, *, dry_run: bool = True) -> Loaded:
        """Check and load `data` as the program for `target` (not yet active). Raises
        WrongRole, Budget, or ProgramFileError (also for a program that fails its dry run)."""
        from edgeadapt.export.errors import ProgramFileError
        from edgeadapt.export.executorch_program import ExecuTorchRunner, program_memory
        from edgeadapt.export.fit import check_fit
        from edgeadapt.export.training import TrainingRunner

        role = program_role(data)
        if role != target:
            kind = "a training" if role == Target.TRAINING else "an inference"
            raise WrongRole(f"this is {kind} program: upload it with target {role.name}", role)
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
        else:
            runner = ExecuTorchRunner.from_bytes(data)
        seconds = 0.0
        if dry_run:  # proves it runs; a training runner used for it is thrown away after
            start = time.perf_counter()
            try:
                zeros = torch.zeros(runner.input_shape)
                runner.forward_backward(zeros) if target == Target.TRAINING else runner.run(zeros)
            except Exception as exc:
                raise ProgramFileError(f"the program fails to run ({type(exc).__name__}: "
                                       f"{exc})") from exc  # fmt: skip
            seconds = time.perf_counter() - start
        return Loaded(data, runner, tuple(runner.input_shape), tuple(arenas), constants, seconds)

    def check_adapter(self, blob: bytes, initial: dict[str, Tensor] | None = None) -> dict:
        """Parse a pushed adapter and check its names and shapes against the training
        program (ValueError saying what differs)."""
        state = blob_to_state(blob)
        want = initial if initial is not None else self.initial
        if want is not None:
            shapes = {k: tuple(v.shape) for k, v in want.items()}
            got = {k: tuple(v.shape) for k, v in state.items()}
            if shapes != got:
                missing = sorted(set(shapes) - set(got))[:3]
                extra = sorted(set(got) - set(shapes))[:3]
                raise ValueError(f"adapter does not match the training program: missing "
                                 f"{missing}, unexpected {extra}")  # fmt: skip
        return state

    # -- switching (the caller has written flash first) -------------------------------------

    def activate(self, target: int, loaded: Loaded, committed: dict | None = None) -> None:
        """The new program replaces the old; for TRAINING, `committed` is the adapter kept."""
        self.loaded[target] = loaded
        if target == Target.TRAINING:  # a new inference program leaves the adaptation alone
            self.initial = program_parameters(loaded.data)
            self.committed = committed
            self.reset_state()

    def set_adapter(self, state: dict[str, Tensor] | None) -> None:
        self.committed = state
        self.reset_state()

    def reset_state(self) -> None:
        """The training program's state as committed: its own buffers, the committed
        adapter's parameters (else its own); nothing has run."""
        from edgeadapt.export.training import TrainingRunner

        train = self.loaded.get(Target.TRAINING)
        self.trainer, self.primed = None, False
        if train is not None:
            data = with_parameters(train.data, self.committed) if self.committed else train.data
            self.trainer = TrainingRunner.from_bytes(data, lr=self.lr)

    # -- state ------------------------------------------------------------------------------

    def program(self, target: int) -> Loaded | None:
        return self.loaded.get(target)

    def timed(self, target: int, seconds: float) -> None:
        """Keep the first measured run time of a program loaded without a dry run (at boot),
        so later runs announce what it takes instead of the commit's guess."""
        loaded = self.loaded.get(target)
        if loaded is not None and not loaded.seconds:
            self.loaded[target] = replace(loaded, seconds=max(seconds, 1e-6))

    def parameters(self) -> dict[str, Tensor] | None:
        if self.primed:
            return self.trainer.parameters()
        return self.committed if self.committed is not None else self.initial

    def adapter_blob(self) -> bytes | None:
        state = self.parameters()
        return state_to_blob(state) if state is not None else None

    def run_inference(self, x: Tensor) -> Tensor:
        return self.loaded[Target.PROGRAM].runner.run(x)

    def run_step(self, x: Tensor) -> tuple[Tensor, float, int]:
        result = self.trainer.step(x)
        self.primed = True
        return result
