"""What one adaptation step costs in memory: its peak, measured two ways, and what it keeps.

A device must hold the step's peak, so that is the headline. `measure_step_memory` runs one
step on a copy of the adapter (the caller's is untouched) and tracks every tensor storage the
step allocates (`_StepTracker`, a TorchDispatchMode that sees the forward, the backward, any
recomputation inside the backward and the optimiser step):

- peak_step: the most bytes of those storages alive at once (activations, temporaries,
  gradients, first-step optimiser state); peak_total adds the weights. Buffers a kernel
  allocates inside itself are not tensors and are not seen; `measure_step_rss` is the check.
- peak_phases: the most bytes alive during each phase of the step: forward, backward,
  recompute (re-running a part inside backward, e.g. EcoTTA's `MetaPart`), optimizer (the
  optimiser's `step`) and after_step (teacher / anchor updates);
- peak_parts: what is alive at the peak, by category: kept_for_backward (saved by autograd in
  the forward), recompute (allocated while recomputing), gradients and optimizer_state (what
  the parameters' `.grad` and the optimiser hold after the step) and temporaries (the rest:
  outputs, gradients flowing through backward, scratch);
- recompute_carried: for each recomputation after the first (each one
  `edgeadapt.modules.meta.recomputing` marks: an EcoTTA part), the bytes allocated by the
  earlier ones still alive when it starts, the parameters' gradients left out; at most the
  input gradient one part hands the next;
- saved_for_backward ("kept for backward"): bytes of the tensors autograd keeps between
  forward and backward, deduplicated by storage, parameters and buffers excluded (the most
  alive at once, for a method with two passes a step);
- trainable / gradients / optimizer_state: bytes of the trained parameters, their gradients
  and the optimiser's tensors after the step; frozen: every other parameter and buffer
  (teacher and anchor copies too).

The step is measured at its worst: entropy filters let every sample through, and a method
that updates only every k samples exposes `prepare_memory_probe()` on its adapter, which makes
the next call run its update step; the copy's is called before the measured step (with the
input shape, where it takes one).

`measure_step_rss` measures the same step the other way: in a fresh process, the peak
resident set during the step minus the resident set just before it (Linux, /proc).

Analytic (`analytic_step_memory`), the TinyTL / EcoTTA planning model of what is kept for
backward: a trained conv, linear or batch-statistics BN keeps its float input; a frozen conv,
linear or eval BN keeps nothing; a ReLU on the gradient path keeps a 1-bit mask; a part or meta
conv block recomputed in backward keeps its input, unless that input needs no gradient and a
frozen stem made it from the network's input (`edgeadapt.modules.lean.frozen_prefix`: it is
rebuilt). Frozen weights may be counted at 8 bits.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import subprocess
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from edgeadapt.errors import EdgeAdaptError

__all__ = [
    "CATEGORIES",
    "PHASES",
    "RssUnavailableError",
    "StepMemory",
    "analytic_step_memory",
    "measure_step_memory",
    "measure_step_rss",
]

PHASES = ("forward", "backward", "recompute", "optimizer", "after_step")
CATEGORIES = ("kept_for_backward", "recompute", "gradients", "optimizer_state", "temporaries")


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
    peak_step: int | None = None  # measured only: most bytes alive at once during the step
    peak_phase: str | None = None  # the phase the peak falls in (one of PHASES)
    peak_phases: dict[str, int] = field(default_factory=dict)  # phase -> most bytes alive in it
    peak_parts: dict[str, int] = field(default_factory=dict)  # category -> bytes at the peak
    recompute_carried: tuple[int, ...] = ()  # see the module docstring
    analytic: bool = False

    @property
    def adaptation(self) -> int:
        """What adapting keeps beyond plain inference between forward and backward: kept
        activations, gradients and optimiser state (the planning model's comparison; the
        device must hold `peak_step`)."""
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


class _Storage:
    """One storage the step allocated: its size, the phase it was made in, whether autograd
    kept it for backward."""

    __slots__ = ("finalizer", "nbytes", "phase", "saved")

    def __init__(self, nbytes: int, phase: str) -> None:
        self.nbytes, self.phase, self.saved = nbytes, phase, False
        self.finalizer: weakref.finalize | None = None


class _StepTracker(TorchDispatchMode):
    """Bytes of the storages created inside the mode that are still alive, by phase.

    Every op's outputs are looked at; a storage not seen before and not one of the op's inputs
    (a view or an in-place result of an input is no new memory) is counted until it is freed.
    The mode is thread-local state that autograd carries into the backward, so the backward's
    ops, a recomputation's and the optimiser's are seen too.

    The phase: outside a backward, the forward (before the first backward), the optimiser's
    step (between its hooks) or after_step; inside a backward, recompute within a recomputation
    `edgeadapt.modules.meta.recomputing` marks, a backward nested in this one, or wherever
    autograd records a graph (grad mode on), else backward. Each marked recomputation is one
    episode; what earlier episodes left alive when the next begins is `carried`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.peak_phase = "forward"
        self.phase_peaks: dict[str, int] = {}  # the phases that ran, in order
        self.in_optimizer = False
        self._alive: dict[int, _Storage] = {}
        self._at_peak: list[_Storage] = []
        self._backward_seen = False
        self._outer_task: int | None = None
        self._episode = 0  # the marked recomputation (edgeadapt.modules.meta) last seen
        self._recompute_seen = False
        self._carried: list[list[_Storage]] = []

    def _phase(self) -> str:
        from edgeadapt.modules.meta import recomputations

        task = torch._C._current_graph_task_id()
        if task == -1:
            self._outer_task = None
            if self.in_optimizer:
                return "optimizer"
            return "after_step" if self._backward_seen else "forward"
        self._backward_seen = True
        if self._outer_task is None:
            self._outer_task = task
        episode = recomputations()
        if episode and episode != self._episode:  # a marked recomputation begins
            self._episode = episode
            earlier = [r for r in self._alive.values() if r.phase == "recompute"]
            if earlier or self._recompute_seen:
                self._carried.append(earlier)
        if episode or task != self._outer_task or torch.is_grad_enabled():
            # A marked recomputation, a backward nested in this one, or a graph recorded
            # inside a backward: all recompute.
            self._recompute_seen = True
            return "recompute"
        return "backward"

    def _free(self, key: int, record: _Storage) -> None:
        self.live -= record.nbytes
        if self._alive.get(key) is record:
            del self._alive[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "profiler":  # record_function markers (the optimiser's step)
            return out
        phase = self._phase()
        inputs = set()
        if func is not torch.ops.aten.lift_fresh.default:  # torch.tensor(...): new memory
            inputs = {
                t.untyped_storage().data_ptr()
                for t in tree_flatten((args, kwargs))[0]
                if isinstance(t, Tensor) and t.device.type != "meta"
            }
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key = st.data_ptr()
                if key and key not in self._alive and key not in inputs:
                    record = _Storage(st.nbytes(), phase)
                    record.finalizer = weakref.finalize(st, self._free, key, record)
                    self._alive[key] = record
                    self.live += record.nbytes
        self.phase_peaks[phase] = max(self.phase_peaks.get(phase, 0), self.live)
        if self.live > self.peak:
            self.peak, self.peak_phase = self.live, phase
            self._at_peak = list(self._alive.values())
        return out

    def mark_saved(self, t: Tensor) -> None:
        record = self._alive.get(t.untyped_storage().data_ptr())
        if record is not None:
            record.saved = True

    def records(self, tensors) -> set[int]:
        """ids of the records of these (live) tensors' storages."""
        found = (self._alive.get(t.untyped_storage().data_ptr()) for t in tensors)
        return {id(r) for r in found if r is not None}

    def breakdown(self, gradients: set[int], optimizer_state: set[int]) -> dict[str, int]:
        """What was alive at the peak, by category (see the module docstring)."""
        parts = dict.fromkeys(CATEGORIES, 0)
        for r in self._at_peak:
            if id(r) in gradients:
                key = "gradients"
            elif id(r) in optimizer_state:
                key = "optimizer_state"
            elif r.phase == "recompute":
                key = "recompute"
            elif r.saved:
                key = "kept_for_backward"
            else:
                key = "temporaries"
            parts[key] += r.nbytes
        return parts

    def carried(self, gradients: set[int]) -> tuple[int, ...]:
        return tuple(sum(r.nbytes for r in c if id(r) not in gradients) for c in self._carried)

    def close(self) -> None:
        for r in self._alive.values():
            if r.finalizer is not None:
                r.finalizer.detach()
        self._alive.clear()
        self._at_peak = []
        self._carried = []


class _KeptBytes:
    """Bytes of the storages autograd keeps for backward (weights excluded) still alive, and
    the most at once: a method with two forward-backward passes a step (SAR) keeps one
    pass's at a time."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude, self.live, self.peak = exclude, 0, 0
        self._alive: dict[int, weakref.finalize] = {}

    def add(self, t: Tensor) -> bool:
        """Count `t`'s storage if it is new; True if it is kept (not a weight)."""
        st = t.untyped_storage()
        key = st.data_ptr()
        if key in self.exclude:
            return False
        if key not in self._alive:
            n = st.nbytes()
            self.live += n
            self.peak = max(self.peak, self.live)
            self._alive[key] = weakref.finalize(st, self._drop, key, n)
        return True

    def _drop(self, key: int, n: int) -> None:
        self.live -= n
        self._alive.pop(key, None)

    def close(self) -> None:
        for f in self._alive.values():
            f.detach()
        self._alive.clear()


def _worst_case(adapter: nn.Module) -> None:
    """Let every sample through the entropy filters: memory is planned for the worst case."""
    if hasattr(adapter, "entropy_threshold"):
        adapter.entropy_threshold = float("inf")


def _probe_copy(adapter: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of `adapter` whose next call, on a batch of `input_shape`, runs a full
    adaptation step on every sample."""
    a = copy.deepcopy(adapter)
    _worst_case(a)
    prepare = getattr(a, "prepare_memory_probe", None)
    if callable(prepare):  # methods that update every k samples: make the next call update
        if inspect.signature(prepare).parameters:
            prepare(tuple(input_shape))
        else:
            prepare()
    return a


def _example(input_shape: tuple[int, ...], seed: int) -> Tensor:
    return torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))


def _optimizer_tensors(adapter: nn.Module) -> list[Tensor]:
    opt = getattr(adapter, "optimizer", None)
    if opt is None:
        return []
    return [v for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)]


def measure_step_memory(
    adapter: nn.Module, input_shape: tuple[int, ...], *, seed: int = 0
) -> StepMemory:
    """Run one adaptation step on a copy of `adapter` and measure its peak and what it keeps
    (see the module docstring)."""
    a = _probe_copy(adapter, input_shape)
    x = _example(input_shape, seed)
    weight_ptrs = {t.untyped_storage().data_ptr() for t in [*a.parameters(), *a.buffers()]}
    kept = _KeptBytes(weight_ptrs)
    tracker = _StepTracker()

    def pack(t: Tensor) -> Tensor:
        # Tensors saved while backward runs (recomputation inside a backward) are transient.
        if torch._C._current_graph_task_id() == -1 and kept.add(t):
            tracker.mark_saved(t)
        return t

    opt = getattr(a, "optimizer", None)
    hooks = []
    if isinstance(opt, torch.optim.Optimizer):

        def enter(*_: Any) -> None:
            tracker.in_optimizer = True

        def leave(*_: Any) -> None:
            tracker.in_optimizer = False

        hooks = [opt.register_step_pre_hook(enter), opt.register_step_post_hook(leave)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), tracker:
            a(x)
    finally:
        for h in hooks:
            h.remove()
    trainable = [p for p in a.parameters() if p.requires_grad]
    train_ids = {id(p) for p in trainable}
    frozen = [t for t in a.parameters() if id(t) not in train_ids] + list(a.buffers())
    grads = [p.grad for p in trainable if p.grad is not None]
    opt_state = _optimizer_tensors(a)
    grad_records = tracker.records(grads)
    opt_records = tracker.records(opt_state)
    parts = tracker.breakdown(grad_records, opt_records)
    carried = tracker.carried(grad_records)
    tracker.close()
    kept.close()
    return StepMemory(
        method=a.config.method,
        input_shape=tuple(input_shape),
        saved_for_backward=kept.peak,
        trainable=_nbytes(trainable),
        gradients=_nbytes(grads),
        optimizer_state=_nbytes(t for t in opt_state if t.numel() > 1),
        frozen=_nbytes(frozen),
        peak_step=tracker.peak,
        peak_phase=tracker.peak_phase,
        peak_phases=dict(tracker.phase_peaks),
        peak_parts=parts,
        recompute_carried=carried,
    )


def analytic_step_memory(
    adapter: nn.Module, input_shape: tuple[int, ...], *, frozen_bits: int = 32, mask_bits: int = 1
) -> StepMemory:
    """The planning model's estimate for one step at `input_shape` (see the module docstring).
    An adapter whose update trains on another batch than the stream's (RoTTA's memory bank)
    says which through `update_input_shape(input_shape)`; the plan is for that batch."""
    plan = getattr(adapter, "update_input_shape", None)
    update_shape = tuple(plan(input_shape)) if callable(plan) else tuple(input_shape)
    from edgeadapt.methods._state import no_running_stat_updates
    from edgeadapt.modules.lean import rebuilder
    from edgeadapt.modules.meta import MetaConvBlock, MetaPart

    model = adapter.model
    records: list[tuple[nn.Module, int, int]] = []  # (module, input numel, output numel)

    def is_unit(m: nn.Module) -> bool:
        recomputed = isinstance(m, MetaPart) and m.recompute
        return recomputed or isinstance(m, MetaConvBlock) or not any(True for _ in m.children())

    rebuilt: set[int] = set()  # recomputed parts whose input a frozen stem rebuilds

    def hook(m: nn.Module, args, out) -> None:
        inp = args[0] if args and isinstance(args[0], Tensor) else None
        if isinstance(m, MetaPart) and inp is not None and rebuilder(inp) is not None:
            rebuilt.add(id(m))
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
            logits = model(_example(update_shape, 0))
    finally:
        for h in handles:
            h.remove()

    keeps = 0
    on_path = False
    for m, n_in, n_out in records:
        trains = any(p.requires_grad for p in m.parameters())
        constant_input = not on_path  # nothing before it trains: its input needs no gradient
        on_path = on_path or trains
        if not on_path:
            continue
        if constant_input and id(m) in rebuilt:
            continue  # a recomputed part that rebuilds its input from the network's
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


class RssUnavailableError(EdgeAdaptError, RuntimeError):
    """The resident-set measurement needs Linux's /proc (VmHWM and a writable clear_refs)."""


def measure_step_rss(
    model: str,
    config: Any,
    input_shape: tuple[int, ...],
    *,
    num_classes: int = 10,
    seed: int = 0,
    timeout: float = 600.0,
) -> dict[str, int]:
    """The peak resident memory of one adaptation step, measured in a fresh process.

    The process builds the registered `model` (weights do not change memory) and wraps it with
    `config`, makes two probe copies as `measure_step_memory` does, runs one step on the first
    (first-call costs: kernel caches, lazy imports) and frees it, then runs one step on the
    second: `step` is its peak resident set (VmHWM, reset just before) minus the resident set
    just before. glibc is told to return freed blocks of 64 KiB or more at once
    (MALLOC_MMAP_THRESHOLD_) and gives the heap's free pages back before the step
    (malloc_trim), and one thread runs, so the resident set follows what is alive; it also
    holds what the tracker does not see: kernels' scratch, interpreter objects, allocator
    pages (about 1 MiB a step). Returns bytes: rss_before, rss_peak, step.
    """
    from edgeadapt.config import to_dict

    if not os.access("/proc/self/clear_refs", os.W_OK):
        raise RssUnavailableError(
            "measuring the resident set needs Linux's /proc/self/clear_refs (writable); "
            "use measure_step_memory alone here"
        )
    request = {
        "model": model,
        "num_classes": num_classes,
        "config": to_dict(config),
        "input_shape": list(input_shape),
        "seed": seed,
    }
    # The child imports this package from where the parent did.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "MALLOC_MMAP_THRESHOLD_": "65536"}
    env["OMP_NUM_THREADS"] = "1"
    code = "import sys; from edgeadapt.memory import _rss_probe; _rss_probe(sys.argv[1])"
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(request)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RssUnavailableError(
            f"the resident-set probe of {request['config']['method']!r} failed "
            f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _proc_status_bytes(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RssUnavailableError(f"/proc/self/status has no {field_name}")


def _malloc_trim() -> None:
    """Give the heap's free pages back (glibc), so blocks under the mmap threshold that the
    step allocates count as they are touched, not as reuse of pages an earlier step left."""
    import contextlib
    import ctypes
    import ctypes.util

    # Not glibc: nothing to trim, and the resident set may then read low.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _rss_probe(request_json: str) -> None:
    """The child of `measure_step_rss`: prints one JSON line."""
    import gc

    from edgeadapt.api import wrap
    from edgeadapt.config import config_from_dict
    from edgeadapt.models import create_model

    request = json.loads(request_json)
    torch.set_num_threads(1)
    adapter = wrap(
        create_model(request["model"], num_classes=request["num_classes"]),
        config_from_dict(request["config"]),
    )
    shape = tuple(request["input_shape"])
    warm, probe = _probe_copy(adapter, shape), _probe_copy(adapter, shape)
    x = _example(shape, request["seed"])
    del adapter
    warm(x)
    del warm
    gc.collect()
    _malloc_trim()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    before = _proc_status_bytes("VmRSS")
    probe(x)
    peak = _proc_status_bytes("VmHWM")
    print(json.dumps({"rss_before": before, "rss_peak": peak, "step": peak - before}))
