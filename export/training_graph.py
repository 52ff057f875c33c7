"""The adaptation step as a graph with its loss inside, ready for ExecuTorch's training flow.

ExecuTorch trains a program whose first output is the loss: `_export_forward_backward` adds
the backward graph and makes the gradients and trainable parameters extra outputs. These
modules compute the same loss as the eager methods with plain tensor ops only (no lean
autograd Functions, no train-mode BN op, no data-dependent shapes), chosen so the backward
keeps little (`training_ops`): the memory-lean eager path, rebuilt from ops the exporter
differentiates itself.

Differences from eager, on purpose:
- EcoTTA keeps samples with entropy < margin·ln C by a 0/1 mask instead of boolean indexing
  (a data-dependent shape). When no sample passes, eager skips the update; the program
  returns `kept = 0` and the runner skips the optimiser step, so both agree.
- Running statistics are not updated (eager's meta BNs track them only for the source-
  statistics fallback; predictions on batch statistics do not read them).
- A batch of one is allowed: BNs on batch statistics then use the frame's own spatial
  statistics (eager adapters refuse a batch of one; `small_batch="predict"` there).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call

from edgeadapt.export.graph import PlainStreamBatchNorm2d, plain_copy, replace_batchnorms
from edgeadapt.export.training_ops import int8_frozen_convs, lean_abs, make_lean_for_training
from edgeadapt.losses import soft_cross_entropy
from edgeadapt.methods._augment import ViewDraws, draw_views, views_from_draws
from edgeadapt.methods.ecotta import _buffer_name, more_confident, view_average

__all__ = ["EcoTTAStep", "EcoTTATeacherStep", "TentStep"]


def _pad_by_concat(net: nn.Module) -> None:
    """Option-A shortcuts pad channels with F.pad, whose backward is a pad with negative
    widths, which ExecuTorch's portable `constant_pad_nd` refuses ("Padding values must be
    non-negative"). Concatenating zeros computes the same and its backward is a slice."""
    from edgeadapt.models.cifar_resnet import PadShortcut

    for m in net.modules():
        if type(m) is PadShortcut:
            m.__class__ = _ConcatPadShortcut


def _make_concat_pad():
    from edgeadapt.models.cifar_resnet import PadShortcut

    class ConcatPadShortcut(PadShortcut):
        def forward(self, x: Tensor) -> Tensor:
            x = x[:, :, :: self.stride, :: self.stride]
            n, _, h, w = x.shape
            front = x.new_zeros((n, self.pad_front, h, w))
            back = x.new_zeros((n, self.pad_back, h, w))
            return torch.cat([front, x, back], dim=1)

    return ConcatPadShortcut


_ConcatPadShortcut = _make_concat_pad()


def _entropy(logits: Tensor) -> Tensor:
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


class _Step(nn.Module):
    """What `to_training_program` asks of every step module; the plain steps take the batch
    alone and mutate only the stream statistics of BNs on them."""

    @property
    def mutable_buffers(self) -> tuple[str, ...]:
        """Name patterns of the buffers the program writes: their values are saved."""
        streams = any(isinstance(m, PlainStreamBatchNorm2d) and m.update for m in self.modules())
        return ("running_mean", "running_var") if streams else ()

    def example_inputs(self, x: Tensor) -> tuple[Tensor, ...]:
        """The inputs of one call for the batch `x`."""
        return (x,)


class EcoTTAStep(_Step):
    """x -> (loss, logits, kept): entropy over confident samples + λ · mean part L1."""

    def __init__(self, adapter, *, int8: bool = False) -> None:
        from edgeadapt.modules.meta import MetaPart

        super().__init__()
        net = plain_copy(adapter.model)  # the student: the step trains its weights
        # Frozen ones too (eval BN backward is not portable); stream statistics move per call.
        replace_batchnorms(net, which="all", update_stream=True)
        _pad_by_concat(net)
        net.requires_grad_(False)
        net.eval()  # MetaConvBlock's eval path is the plain conv -> BN -> ReLU
        self.parts = [m for m in net.modules() if isinstance(m, MetaPart)]
        for part in self.parts:  # trainable by structure, as EcoTTAAdapter.trainable_parameters
            part.adapter_bn.requires_grad_(True)
            part.adapter_conv.requires_grad_(True)
        make_lean_for_training(net)
        if int8:
            int8_frozen_convs(net)
        self.model = net
        self.threshold = float(adapter.entropy_threshold)
        self.reg_weight = float(adapter.config.reg_weight)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, reg = self._logits_and_reg(x)
        ent = _entropy(logits)
        keep = (ent < self.threshold).to(logits.dtype)
        kept = keep.sum()
        ent_loss = (ent * keep).sum() / torch.clamp(kept, min=1.0)
        loss = ent_loss + self.reg_weight * reg
        return loss, logits.detach(), kept.detach()

    def _logits_and_reg(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The student's logits and the self-distilled term (mean L1 over the parts)."""
        pairs: list[list[Tensor]] = [[] for _ in self.parts]
        handles = []
        for part, slot in zip(self.parts, pairs):
            handles.append(part.frozen.register_forward_hook(lambda _m, _a, o, s=slot: s.append(o)))
            handles.append(part.register_forward_hook(lambda _m, _a, o, s=slot: s.append(o)))
        try:
            logits = self.model(x)
        finally:
            for h in handles:
                h.remove()
        reg = torch.zeros((), dtype=logits.dtype)
        for frozen, adapted in pairs:
            reg = reg + lean_abs(adapted - frozen.detach()).mean()
        return logits, reg / max(len(pairs), 1)


class EcoTTATeacherStep(EcoTTAStep):
    """EcoTTA with its mean teacher (`teacher_momentum`, `teacher_views`):
    (x[, uniform, blur, noise]) -> (loss, teacher's prediction, kept = N).

    The teacher's weights are buffers the program updates itself. Eager moves them toward the
    student after the optimiser step; the program cannot see that step, so it applies the same
    update at the start of the next call, before the teacher predicts: the same sequence of
    teachers. `teacher_pending` (0 in the exported file) skips it on the first call, because
    the adapter already applied the update after its last step. The views' random numbers are
    inputs (`edgeadapt.methods._augment.ViewDraws`): the device draws them, and a test can feed
    the draws eager PyTorch made."""

    def __init__(self, adapter, *, int8: bool = False) -> None:
        super().__init__(adapter, int8=int8)
        config = adapter.config
        self.momentum = float(config.teacher_momentum)
        self.views = int(config.teacher_views)
        self.input_mean, self.input_std = config.input_mean, config.input_std
        # Named as in the eager adapter (`teacher_weights`: a submodule called `meta`, `graph`
        # or `code` breaks export).
        self.teacher_weights = nn.Module()
        self.teacher_names = {}
        for name, value in adapter._teacher().items():
            buffer = _buffer_name(name)
            self.teacher_weights.register_buffer(buffer, value.detach().clone())
            self.teacher_names[name] = buffer
        self.register_buffer("teacher_pending", torch.zeros(()))

    @property
    def mutable_buffers(self) -> tuple[str, ...]:
        return ("teacher_weights", "teacher_pending", *super().mutable_buffers)

    def example_inputs(self, x: Tensor) -> tuple[Tensor, ...]:
        """The inputs of one call for the batch `x`: the views' draws from a fixed seed."""
        if not self.views:
            return (x,)
        draws = draw_views(x.shape, torch.Generator().manual_seed(0), self.views, x.dtype)
        return (x, *draws)

    def forward(self, x: Tensor, *draws: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        weight = (1 - self.momentum) * self.teacher_pending
        teacher = {}
        for name, buffer in self.teacher_names.items():
            t = getattr(self.teacher_weights, buffer)
            t.copy_(t + weight * (self.model.get_parameter(name).detach() - t))
            teacher[name] = t
        self.teacher_pending.fill_(1.0)
        with _stream_updates_off(self.model):  # as eager: the teacher's passes observe nothing
            target = functional_call(self.model, teacher, (x,), strict=False)
            if self.views:
                views = views_from_draws(x, ViewDraws(*draws), self.input_mean, self.input_std)
                averaged = view_average(self.model, teacher, views, self.views)
                target = more_confident(averaged, target)
        target = target.detach()
        logits, reg = self._logits_and_reg(x)
        loss = soft_cross_entropy(logits, target).mean() + self.reg_weight * reg
        kept = torch.ones((), dtype=logits.dtype) * x.shape[0]
        return loss, target, kept


@contextlib.contextmanager
def _stream_updates_off(net: nn.Module) -> Iterator[None]:
    """While tracing: the stream BNs of `net` normalise without writing their statistics."""
    touched = [m for m in net.modules() if isinstance(m, PlainStreamBatchNorm2d) and m.update]
    for m in touched:
        m.update = False
    try:
        yield
    finally:
        for m in touched:
            m.update = True


class TentStep(_Step):
    """x -> (loss, logits, kept): mean entropy; every BN on batch statistics, affine trains."""

    def __init__(self, adapter, *, int8: bool = False) -> None:
        from edgeadapt.export.graph import PlainBatchNorm2d

        super().__init__()
        net = plain_copy(adapter.model)  # the student: the step trains its weights
        replace_batchnorms(net, which="all", update_stream=True)
        _pad_by_concat(net)
        net.requires_grad_(False)
        for m in net.modules():
            on_test_statistics = isinstance(m, PlainStreamBatchNorm2d) or (
                isinstance(m, PlainBatchNorm2d) and m.batch_statistics
            )
            if on_test_statistics and m.weight is not None:
                m.weight.requires_grad_(True)
                m.bias.requires_grad_(True)
        make_lean_for_training(net)
        if int8:
            int8_frozen_convs(net)
        net.eval()
        self.model = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.model(x)
        ent = _entropy(logits)
        kept = torch.ones((), dtype=logits.dtype) * math.prod(ent.shape)
        return ent.mean(), logits.detach(), kept
