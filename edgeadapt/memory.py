"""What one adaptation step costs in memory, measured, next to the analytic planning model.

Measured (`measure_step_memory`), on a copy of the adapter so the caller's state is untouched:
- saved_for_backward: bytes of the tensors autograd keeps between forward and backward,
  deduplicated by storage, parameters and buffers excluded (they are counted as weights);
- trainable / gradients / optimizer_state: bytes of the trained parameters, their gradients
  and the optimiser's tensors after the step;
- frozen: every other parameter and buffer the adapter holds (teacher and anchor copies too);
- peak_step: the most bytes of tensors allocated during the step alive at once (activations,
  temporaries, gradients, first-step optimiser state); peak_total adds the weights.

Analytic (`analytic_step_memory`), the TinyTL / EcoTTA planning model: a trained conv, linear
or batch-statistics BN keeps its float input; a frozen conv, linear or eval BN keeps nothing;
a ReLU on the gradient path keeps a 1-bit mask; a part or meta conv block recomputed in backward keeps its input.
Frozen weights may be counted at 8 bits.
"""

from __future__ import annotations

import copy
import dataclasses
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["StepMemory", "analytic_step_memory", "measure_step_memory"]


@dataclass(frozen=True)
class StepMemory:
    """Bytes one adaptation step costs. `analytic` marks the planning model's estimate."""

    method: str
    input_shape: tuple[int, ...]
    saved_for_backward: int
    trainable: int
    gradients: int
    optimizer_state: int
    frozen: int
    peak_step: int | None = None  # measured only
    analytic: bool = False

    @property
    def adaptation(self) -> int:
        """What adapting adds to plain inference: kept activations, gradients, optimiser state
        and trainable copies (the paper's comparison)."""
        return self.saved_for_backward + self.gradients + self.optimizer_state

    @property
    def total(self) -> int:
        return (
            self.saved_for_backward
            + self.trainable
            + self.gradients
            + self.optimizer_state
            + self.frozen
        )

    @property
    def peak_total(self) -> int | None:
        return None if self.peak_step is None else self.peak_step + self.trainable + self.frozen

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(adaptation=self.adaptation, total=self.total, peak_total=self.peak_total)
        return d


def _nbytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, Tensor):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


class _PeakTracker(TorchDispatchMode):
    """Tracks bytes of storages created inside the mode that are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._alive: dict[int, weakref.finalize] = {}

    def _free(self, key: int, n: int) -> None:
        self.live -= n
        self._alive.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key = st.data_ptr()
                if key and key not in self._alive:
                    n = st.nbytes()
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    self._alive[key] = weakref.finalize(st, self._free, key, n)
        return out


def _worst_case(adapter: nn.Module) -> None:
    """Let every sample through the entropy filters: memory is planned for the worst case."""
    if hasattr(adapter, "entropy_threshold"):
        adapter.entropy_threshold = float("inf")


def _example(input_shape: tuple[int, ...], seed: int) -> Tensor:
    return torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))


def measure_step_memory(
    adapter: nn.Module, input_shape: tuple[int, ...], *, seed: int = 0
) -> StepMemory:
    """Run one adaptation step on a copy of `adapter` and measure what it keeps."""
    a = copy.deepcopy(adapter)
    _worst_case(a)
    x = _example(input_shape, seed)
    weight_ptrs = {t.untyped_storage().data_ptr() for t in [*a.parameters(), *a.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        # Tensors saved while backward runs (recomputation inside a backward) are transient.
        if torch._C._current_graph_task_id() == -1:
            st = t.untyped_storage()
            if st.data_ptr() not in weight_ptrs:
                saved[st.data_ptr()] = st.nbytes()
        return t

    tracker = _PeakTracker()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), tracker:
        a(x)
    trainable = [p for p in a.parameters() if p.requires_grad]
    train_ids = {id(p) for p in trainable}
    frozen = [t for t in a.parameters() if id(t) not in train_ids] + list(a.buffers())
    opt_state = []
    if getattr(a, "optimizer", None) is not None:
        for state in a.optimizer.state.values():
            opt_state += [v for v in state.values() if isinstance(v, Tensor) and v.numel() > 1]
    return StepMemory(
        method=a.config.method,
        input_shape=tuple(input_shape),
        saved_for_backward=sum(saved.values()),
        trainable=_nbytes(trainable),
        gradients=_nbytes(p.grad for p in trainable if p.grad is not None),
        optimizer_state=_nbytes(opt_state),
        frozen=_nbytes(frozen),
        peak_step=tracker.peak,
    )


def analytic_step_memory(
    adapter: nn.Module, input_shape: tuple[int, ...], *, frozen_bits: int = 32, mask_bits: int = 1
) -> StepMemory:
    """The planning model's estimate for one step at `input_shape` (see the module docstring)."""
    from edgeadapt.methods._state import no_running_stat_updates
    from edgeadapt.modules.meta import MetaConvBlock, MetaPart

    model = adapter.model
    records: list[tuple[nn.Module, int, int]] = []  # (module, input numel, output numel)

    def is_unit(m: nn.Module) -> bool:
        recomputed = isinstance(m, MetaPart) and m.recompute
        return recomputed or isinstance(m, MetaConvBlock) or not any(True for _ in m.children())

    def hook(m: nn.Module, args, out) -> None:
        inp = args[0] if args and isinstance(args[0], Tensor) else None
        records.append(
            (
                m,
                inp.numel() if inp is not None else 0,
                out.numel() if isinstance(out, Tensor) else 0,
            )
        )

    units = [m for m in model.modules() if is_unit(m) and not _inside_block(m, model)]
    handles = [m.register_forward_hook(hook) for m in units]
    try:
        with torch.no_grad(), no_running_stat_updates(model):
            logits = model(_example(input_shape, 0))
    finally:
        for h in handles:
            h.remove()

    keeps = 0
    on_path = False
    for m, n_in, n_out in records:
        trains = any(p.requires_grad for p in m.parameters())
        on_path = on_path or trains
        if not on_path:
            continue
        if isinstance(m, (MetaConvBlock, MetaPart)) or (
            trains and isinstance(m, (nn.Conv2d, nn.Linear))
        ):
            keeps += 4 * n_in
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and (trains or m.training):
            keeps += 4 * n_in + 8 * m.num_features  # input, batch mean and inverse std
        elif isinstance(m, (nn.ReLU, nn.ReLU6)):
            keeps += (n_out * mask_bits + 7) // 8
        elif trains:  # an unknown trained layer: assume it keeps its input
            keeps += 4 * n_in
    if on_path:
        keeps += 8 * logits.numel()  # the loss keeps log-probabilities and probabilities
        keeps += sum((2 * o + 7) // 8 for m, _, o in records if isinstance(m, MetaPart))  # L1 signs

    trainable = [p for p in adapter.parameters() if p.requires_grad]
    train_ids = {id(p) for p in trainable}
    frozen_params = [p for p in adapter.parameters() if id(p) not in train_ids]
    n_train = sum(p.numel() for p in trainable)
    opt = getattr(adapter, "optimizer", None)
    slots = 0
    if isinstance(opt, torch.optim.Adam):
        slots = 2
    elif isinstance(opt, torch.optim.SGD) and opt.defaults.get("momentum", 0):
        slots = 1
    return StepMemory(
        method=adapter.config.method,
        input_shape=tuple(input_shape),
        saved_for_backward=keeps,
        trainable=4 * n_train,
        gradients=4 * n_train,
        optimizer_state=4 * n_train * slots,
        frozen=sum(p.numel() for p in frozen_params) * frozen_bits // 8
        + sum(b.numel() * b.element_size() for b in adapter.buffers()),
        analytic=True,
    )


def _inside_block(m: nn.Module, model: nn.Module) -> bool:
    """True inside a unit that recomputes in backward (accounted for as a whole)."""
    from edgeadapt.modules.meta import MetaConvBlock, MetaPart

    units = [
        b
        for b in model.modules()
        if isinstance(b, MetaConvBlock) or (isinstance(b, MetaPart) and b.recompute)
    ]
    return any(m is not b and any(m is c for c in b.modules()) for b in units)
