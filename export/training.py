"""The adaptation step as an ExecuTorch training program, and a host-side runner for it.

The program is the method's loss graph (`training_graph`) with its backward added by
`torch.export.experimental._export_forward_backward`; it returns (loss, logits, kept,
gradients..., parameters...). It runs on the portable kernels only: a delegate (XNNPACK)
would take the trainable ops in as constants and silently freeze them. `TrainingRunner`
steps it with ExecuTorch's own SGD (`executorch.extension.training.get_sgd_optimizer`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from edgeadapt._extras import needs
from edgeadapt.errors import CheckpointMismatchError
from edgeadapt.export._files import read_program_bytes
from edgeadapt.export.devices import DeviceProfile, load_profile
from edgeadapt.export.errors import (
    ExportError,
    ProgramFileError,
    UnsupportedExportError,
    VerificationError,
)
from edgeadapt.export.report import ExportReport

__all__ = ["TrainingRunner", "to_training_program", "training_step_module"]

PREFIX = "model."  # the step modules hold the network as `.model`, like the adapter
# With int8 kept activations: the gradients' distance from eager, relative to their size,
# beyond which the program is taken for a wrong graph rather than an approximation.
INT8_GRADIENT_BOUND = 1.0


def training_step_module(adapter, *, quantize: str | None = None) -> nn.Module:
    """The plain-op loss graph of an EcoTTA or Tent adapter (x -> loss, logits, kept; EcoTTA
    with its teacher option: `EcoTTATeacherStep`, which takes the views' draws too);
    `quantize="int8"` stores the frozen convolutions' weights int8 (`Int8WeightConv2d`)."""
    from edgeadapt.export.training_graph import EcoTTAStep, EcoTTATeacherStep, TentStep

    if quantize not in (None, "int8"):
        raise UnsupportedExportError(f"quantize must be 'int8' or None, got {quantize!r}")
    method = getattr(getattr(adapter, "config", None), "method", None)
    if method == "ecotta":
        if adapter.config.teacher_momentum is not None:
            return EcoTTATeacherStep(adapter, int8=quantize == "int8")
        return EcoTTAStep(adapter, int8=quantize == "int8")
    if method == "tent":
        return TentStep(adapter, int8=quantize == "int8")
    raise UnsupportedExportError(
        f"training programs exist for 'ecotta' and 'tent'; got {method!r}. Export its "
        "prediction with program='infer' instead"
    )


@needs("executorch", feature="exporting a training program")
def to_training_program(
    adapter,
    example: Tensor,
    path: str | os.PathLike[str],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-2,
    device: DeviceProfile | str | None = None,
    quantize: str | None = None,
    check_images: Tensor | None = None,
    check_steps: int = 20,
    pack_masks: bool = True,
    schedule: bool = True,
    int8_activations: bool = False,
) -> ExportReport:
    """Export one adaptation step of `adapter` for batches shaped like `example`.

    Verified before writing: the program's loss, logits and gradients on `example` against
    eager autograd on the same graph; `max_abs_error` is the largest difference of the three.
    With `device`, the arena is planned into that device's RAM banks (`memory_plan`).
    `quantize="int8"` (implied by an adapter whose config has `frozen_weights="int8"`): the
    frozen convolutions' weights are stored int8 and dequantized in the graph; activations
    stay fp32 (PT2E's activation quantization has no gradient).

    With `check_images` (real images, normalised like the model's input), the program must
    also adapt: `check_steps` steps of it and of the eager adapter with SGD at the adapter's
    lr (`adapt_check.check_adaptation`); a program whose weights do not move, whose
    predictions are constant or that parts from eager raises AdaptationCheckError and is not
    written.

    `pack_masks`: keep the ReLU masks the backward reads as bits (`bit_packed_masks`: exact,
    an eighth of their bytes in the arena, a few more instructions); off only to compare.

    `schedule` (on by default; exact, the same step bit for bit with the portable kernels;
    False exports autograd's joint graph as it is, to compare): aliases
    read directly instead of copied; autograd's |x|, its gradient and a strided slice's
    gradient made with fewer full maps (training_folds); a trainable convolution's weight
    gradient made before its input gradient (`split_conv_backward`); each forward op right
    after its inputs and each backward op made from small tensors right before its first
    use (`early_forward_ops`, `late_backward_ops`); ops that free memory first
    (`memory_aware_order`); elementwise ops written over the input they are the last to
    read (`in_place_elementwise`); arena tensors of one shape at one offset one runtime value
    (`share_arena_tensors`); with `device`, banks contiguous in the address map planned as one
    and each tensor at its own offset where that is smaller (`memory_plan`). A smaller arena
    and far fewer runtime tables (benchmarks/firmware/arena_peak.md).

    `int8_activations` (opt-in, with `schedule`): keep the float activations the
    gradients read as int8 with a step per channel (`int8_kept_activations`): a quarter of
    their bytes; the forward is unchanged and the gradients become approximations. Loss and
    logits are verified against eager as usual; the gradients only to within
    `INT8_GRADIENT_BOUND` of their size, and the distance measured is in the report's notes.
    The bundled expected gradients are the program's own (host runtime).
    benchmarks/firmware/int8_activations.md measures the arena, the gradients and the online
    adaptation against the fp32 step.
    """
    from executorch.exir import to_edge
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass
    from torch.export.experimental import _export_forward_backward

    from edgeadapt.export.arena_peak import arena_peak
    from edgeadapt.export.executorch_program import capture, write_pte
    from edgeadapt.export.in_place import in_place_elementwise
    from edgeadapt.export.memory_order import memory_aware_order
    from edgeadapt.export.memory_plan import backend_config
    from edgeadapt.export.shared_values import share_arena_tensors, share_constant_values
    from edgeadapt.export.training_folds import fold_abs, fold_scatter_adds, fold_sign_gradients
    from edgeadapt.export.training_passes import (
        bit_packed_masks,
        drop_aliases,
        early_forward_ops,
        input_free_conv_backward,
        int8_kept_activations,
        late_backward_ops,
        split_conv_backward,
        training_indices_without_buffer_mutations,
    )

    if int8_activations and not schedule:
        raise UnsupportedExportError(
            "int8 kept activations work on the scheduled step: leave schedule=True"
        )
    profile = load_profile(device) if isinstance(device, str) else device
    if getattr(getattr(adapter, "config", None), "frozen_weights", "fp32") == "int8":
        quantize = "int8"  # the eager adapter already runs int8 frozen weights: so does this
    step = training_step_module(adapter, quantize=quantize)
    example = example.detach()
    inputs = step.example_inputs(example)
    mutable = step.mutable_buffers
    try:
        exported = _export_forward_backward(capture(step, inputs))
        input_free_conv_backward(exported)
        if schedule:
            drop_aliases(exported)
            split_conv_backward(exported)
            fold_sign_gradients(exported)
            fold_abs(exported)
            fold_scatter_adds(exported)
            early_forward_ops(exported)
        if pack_masks:
            bit_packed_masks(exported)
        if int8_activations:
            int8_kept_activations(exported)
        if schedule:  # after packing: the gradient maps are then made from small tensors
            late_backward_ops(exported)
            memory_aware_order(exported)

        def emit(room: int) -> tuple[Any, bytes]:
            config = backend_config(profile, tight=schedule, room=room)
            if mutable:  # without it a mutated buffer's initial value is not written to the file
                config.passes.append(InitializedMutableBufferPass(list(mutable)))
            with training_indices_without_buffer_mutations():
                edge = to_edge(exported)
                if schedule:  # outputs over the inputs they are the last to read
                    in_place_elementwise(edge.exported_program().graph_module)
                manager = edge.to_executorch(config)
            # Scalar arguments shared between instructions: fewer runtime tables on the device.
            data, _ = share_constant_values(manager.buffer)
            if schedule:  # and arena tensors, one value per shape at each offset
                data, _ = share_arena_tensors(data)
            return manager, data

        manager, data = emit(0)
        replanned = None
        if schedule and profile is not None:
            manager, data, replanned = _with_table_room(emit, manager, data, profile)
        peak = arena_peak(manager)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"building the training program failed ({type(exc).__name__}: {exc})"
        ) from exc
    trainable = {_strip(n): p for n, p in step.named_parameters() if p.requires_grad}
    # One eager call only: a step with a teacher updates its buffers on every call.
    loss, logits, kept = step(*inputs)
    grads = dict(zip(trainable, torch.autograd.grad(loss, list(trainable.values()))))
    runner = TrainingRunner.from_bytes(data, lr=0.0, name=str(path))
    got_loss, got_logits, _ = runner.forward_backward(example, inputs[1:] or None)
    got_grads = runner.gradients()
    if set(got_grads) != set(grads):
        raise VerificationError(
            f"the program trains {sorted(got_grads)}, eager trains {sorted(grads)}; not written"
        )
    names = ["loss", "logits", *(f"grad {k}" for k in grads)]
    pairs = [(got_loss, loss.detach()), (got_logits, logits)]
    notes = [replanned] if replanned else []
    if int8_activations:
        # The gradients are approximations by design: held to less than the gradients' own
        # size together (a wrong tensor or scale gives about 100% or far more; ResNet-20's
        # step: 0.14% at most over 200 frames, benchmarks/firmware/int8_activations.md).
        diff = sum(float((got_grads[k] - g).norm()) ** 2 for k, g in grads.items()) ** 0.5
        size = sum(float(g.norm()) ** 2 for g in grads.values()) ** 0.5
        relative = diff / max(size, 1e-30)
        if not diff <= INT8_GRADIENT_BOUND * size:
            raise VerificationError(
                f"with int8 kept activations the program's gradients differ from eager by "
                f"{relative:.0%} of their size (bound {INT8_GRADIENT_BOUND:.0%}); not written"
            )
        notes.append(f"int8 kept activations: gradients within {relative:.1%} of eager "
                     "(relative L2)")  # fmt: skip
        names = names[:2]
    else:
        pairs += [(got_grads[k], g) for k, g in grads.items()]
    # Each tensor within atol + rtol·scale, scale = max|eager| of the loss, of the logits, and
    # of all gradients together: a BN bias gradient is a sum of many cancelling terms, so its
    # error follows the gradients' overall size, not its own (ResNet-20 Tent: 1e-3 on a 0.1
    # gradient when the largest is 0.3).
    errors = [float((got - ref).abs().max()) for got, ref in pairs]
    grad_scale = max((float(g.abs().max()) for g in grads.values()), default=0.0)
    scales = [float(loss.detach().abs()), float(logits.abs().max())]
    scales += [grad_scale] * (len(pairs) - 2)
    ratios = [e / (atol + rtol * sc) for e, sc in zip(errors, scales)]
    worst = max(range(len(ratios)), key=ratios.__getitem__)
    if not ratios[worst] <= 1.0:
        raise VerificationError(
            f"the training program's {names[worst]} differs from eager by {errors[worst]:.3g} "
            f"(beyond atol {atol:g} + rtol {rtol:g}·max|eager|); not written"
        )
    check = None
    if check_images is not None:
        check = _check_adapts(adapter, data, check_images, check_steps, quantize == "int8")
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable.values())
    # The bundled expected outputs, in the method's order: loss, logits, kept, then the
    # gradients and the parameters in the order of the program's signature.
    order = [
        _strip(spec.target)
        for spec in exported.graph_signature.output_specs
        if spec.kind.name == "GRADIENT_TO_PARAMETER"
    ]
    # With int8 kept activations a device reproduces the program's own gradients, not eager's.
    reference = got_grads if int8_activations else grads
    expected = (loss.detach(), logits, kept, *(reference[k] for k in order))
    expected += tuple(trainable[k].detach() for k in order)
    # On the target the same program runs the same portable kernels: only the float rounding
    # of another CPU and libm separates it from this host's runtime, whose own distance from
    # eager was measured above. Ten times that, floored at 1e-5 of the output's size.
    bound = max(10 * max(errors), 1e-5 * (1 + max(scales)))
    return write_pte(
        path, data, example, program="adapt", backend="portable", max_abs_error=max(errors),
        batch_statistics=True, profile=profile, trainable_bytes=trainable_bytes,
        quantized=quantize, expected=expected, bundle_atol=bound, bundle_inputs=inputs,
        notes=(f"{len(grads)} trainable tensors, {sum(g.numel() for g in grads.values())} values",
               *notes),
        adaptation_check=check, arena_peak=peak.to_dict(), merge_contiguous=schedule,
    )  # fmt: skip


def _with_table_room(
    emit: Any, manager: Any, data: bytes, profile: DeviceProfile
) -> tuple[Any, bytes, str | None]:
    """The program planned again with room for the runtime's tables in one bank, where the
    first plan placed every arena but left no bank that room (export/table_room.py), and a
    note for the report; the new plan is kept only if the program then fits. The tables move
    a little with the plan (arena tensors shared at equal offsets), hence a second try with
    the room the second plan asks for."""
    from edgeadapt.export.executorch_program import planned_memory
    from edgeadapt.export.fit import check_fit
    from edgeadapt.export.memory_plan import plan_banks
    from edgeadapt.export.table_room import needed_room

    largest = max(b.capacity for b in plan_banks(profile, merge_contiguous=True))
    room = needed_room(planned_memory(data, profile, merge_contiguous=True), profile)
    for _ in range(2):
        if not room or room > largest:  # no bank could keep it: planning again cannot help
            break
        again = emit(room)
        memory = planned_memory(again[1], profile, merge_contiguous=True)
        if check_fit(memory, profile).fits:
            note = (f"planned again with {room:,} B kept free in one bank for the runtime's "
                    "tables and the firmware's RAM: the first plan left no bank that room")  # fmt: skip
            return (*again, note)
        more = needed_room(memory, profile)
        room = max(room, more) + 1024 if more else 0
    return manager, data, None


def _check_adapts(adapter, data: bytes, images: Tensor, steps: int, int8: bool) -> dict:
    """`check_adaptation` with the device's optimiser: SGD at the adapter's lr (and momentum
    where the adapter uses SGD); raises AdaptationCheckError when the program fails it."""
    from edgeadapt.export.adapt_check import AdaptationCheckError, check_adaptation

    config = adapter.config
    momentum = config.momentum if config.optimizer == "sgd" else 0.0
    check = check_adaptation(adapter, data, images, steps=steps, momentum=momentum, int8=int8)
    if not check.passed:
        raise AdaptationCheckError(check)
    return check.to_dict()


class TrainingRunner:
    """Loads a training program and steps it with ExecuTorch's SGD, as a device would.
    `seed` seeds `generator`, which draws the views of a program with a view-averaging
    teacher."""

    @needs("executorch", feature="running a training program")
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        data = read_program_bytes(path, "ExecuTorch")
        self._init(data, str(path), lr, momentum, weight_decay, seed)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        lr: float,
        momentum: float = 0.0,
        name: str = "<bytes>",
        seed: int = 0,
    ) -> TrainingRunner:
        runner = cls.__new__(cls)
        runner._init(data, name, lr, momentum, 0.0, seed)
        return runner

    @needs("executorch", feature="running a training program")
    def _init(
        self, data: bytes, name: str, lr: float, momentum: float, wd: float, seed: int
    ) -> None:
        from executorch.extension.training import _load_for_executorch_for_training_from_buffer

        if len(data) < 8 or data[4:6] != b"ET":
            raise ProgramFileError(f"{name} is not an ExecuTorch program (no 'ET' identifier)")
        self._data = data  # the runtime reads the buffer in place: keep it alive
        try:
            self.module = _load_for_executorch_for_training_from_buffer(data)
            # Loading is lazy; running the small metadata method makes the runtime parse the
            # program now, so a damaged file fails here and not mid-stream.
            self.module.model.run_method("__et_training_fqn_forward", ())
        except Exception as exc:
            raise ProgramFileError(
                f"{name} could not be loaded by the ExecuTorch runtime ({type(exc).__name__}: "
                f"{exc}); it may be truncated or corrupted: re-export it"
            ) from exc
        self.name, self.hyper = name, (lr, momentum, wd)
        self.optimizer = None  # made on the first step: parameters appear after one run
        meta = self.module.model.method_meta("forward")
        # (x, uniform, blur, noise): uniform is (views, N, 9); a plain step takes x alone.
        self.view_count = int(meta.input_tensor_meta(1).sizes()[0]) if meta.num_inputs() > 1 else 0
        self.generator = torch.Generator().manual_seed(seed)

    def forward_backward(
        self, x: Tensor, draws: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, Tensor, int]:
        """(loss, logits, kept samples) and the gradients, without updating.

        A program with a view-averaging teacher (EcoTTA `teacher_views`) also takes the views'
        random numbers: `draws` (an `edgeadapt.methods._augment.ViewDraws`), else drawn here
        from `self.generator`, as a device draws them from its own."""
        inputs = (x.detach().contiguous(),)
        if self.view_count:
            if draws is None:
                from edgeadapt.methods._augment import draw_views

                draws = draw_views(x.shape, self.generator, self.view_count, x.dtype)
            inputs += tuple(d.detach().contiguous() for d in draws)
        elif draws:
            raise ValueError(f"{self.name} takes only the batch; it has no views to draw for")
        try:
            out = self.module.forward_backward("forward", inputs)
        except Exception as exc:
            raise ProgramFileError(
                f"{self.name} failed to run ({type(exc).__name__}: {exc}); was it exported for "
                f"inputs shaped {tuple(x.shape)}?"
            ) from exc
        return out[0], out[1], int(out[2])

    def step(self, x: Tensor, draws: tuple[Tensor, ...] | None = None) -> tuple[Tensor, float, int]:
        """One adaptation step: (logits before the update, loss, kept). Like the eager
        adapter, no update is applied when no sample was kept. `draws`: as in
        `forward_backward`."""
        from executorch.extension.training import get_sgd_optimizer

        loss, logits, kept = self.forward_backward(x, draws)
        if not torch.isfinite(loss):
            raise VerificationError(f"the program's loss is {float(loss)}; the step was skipped")
        if self.optimizer is None:
            lr, momentum, wd = self.hyper
            self.optimizer = get_sgd_optimizer(
                self.module.named_parameters(), lr, momentum, 0, wd, False
            )
        if kept > 0:
            self.optimizer.step(self.module.named_gradients())
        return logits, float(loss), kept

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The batch shape `forward` was exported for."""
        meta = self.module.model.method_meta("forward").input_tensor_meta(0)
        return tuple(int(s) for s in meta.sizes())

    def gradients(self) -> dict[str, Tensor]:
        return {_strip(k): v.clone() for k, v in self.module.named_gradients().items()}

    def load_parameters(self, state: dict[str, Tensor], *, strict: bool = True) -> None:
        """Copy `state` (named as `parameters()` names them) into the program's own weights.

        Strict: the names and shapes must be exactly the program's, else nothing is written and
        CheckpointMismatchError (a ValueError) says what differs. Not strict: what matches is
        copied and the rest left alone. The runtime exposes its weights only after a first run
        (`forward_backward` on any batch)."""
        mine = {_strip(k): v for k, v in self.module.named_parameters().items()}
        if strict:
            want = {k: tuple(v.shape) for k, v in mine.items()}
            got = {k: tuple(v.shape) for k, v in state.items()}
            if want != got:
                missing = sorted(set(want) - set(got))[:3]
                unexpected = sorted(set(got) - set(want))[:3]
                wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:3]
                raise CheckpointMismatchError(
                    f"weights do not match the training program: missing {missing}, unexpected "
                    f"{unexpected}, wrong shape {wrong} ({len(got)} tensors given, "
                    f"{len(want)} expected); use weights of the adapter this program was "
                    "exported from"
                )
        with torch.no_grad():
            for name, value in state.items():
                if name in mine and tuple(mine[name].shape) == tuple(value.shape):
                    mine[name].copy_(value)

    def parameters(self) -> dict[str, Tensor]:
        """The trainable tensors, named as in `adapter.model` (the program's own memory:
        copies)."""
        return {_strip(k): v.clone() for k, v in self.module.named_parameters().items()}


def _strip(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name
