"""Losses shared by the methods."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeadapt.modules.lean import pack_bits, unpack_bits

__all__ = ["confidence_weights", "entropy", "entropy_margin", "lean_l1", "soft_cross_entropy"]


def entropy(logits: Tensor) -> Tensor:
    """Per-sample Shannon entropy of softmax(logits), in nats."""
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Per-sample cross-entropy of the student against the teacher's soft labels."""
    return -(teacher_logits.softmax(dim=1) * student_logits.log_softmax(dim=1)).sum(dim=1)


def entropy_margin(margin: float, num_classes: int) -> float:
    """EATA / EcoTTA threshold: `margin` · ln(C)."""
    return margin * math.log(num_classes)


def confidence_weights(ent: Tensor, reference: float) -> Tensor:
    """EATA's sample weights 1 / exp(H - H0): confident samples count more. Constants for
    backward (the weights scale the loss, they are not optimised)."""
    return torch.exp(reference - ent.detach())


class _LeanL1Fn(torch.autograd.Function):
    """mean |a − b| (b a constant target) keeping 1 bit per element for backward."""

    @staticmethod
    def forward(ctx, a, b):  # type: ignore[override]
        diff = a - b
        ctx.save_for_backward(pack_bits(diff > 0), pack_bits(diff < 0))
        ctx.shape = a.shape
        return diff.abs().mean()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pos, neg = ctx.saved_tensors
        sign = unpack_bits(pos, ctx.shape).float() - unpack_bits(neg, ctx.shape).float()
        n = sign.numel()
        return sign * (grad / n), None


def lean_l1(adapted: Tensor, target: Tensor) -> Tensor:
    """Mean L1 distance to a fixed target (no gradient to `target`), lean for backward."""
    return _LeanL1Fn.apply(adapted, target.detach())
