"""int8 frozen weights, as a device stores them: what the exporter writes and what the eager
adapter runs with `frozen_weights="int8"`, from one function, so both compute the same.

Symmetric, one scale per output channel, values in [-127, 127] (how the XNNPACK quantizer and
the training programs' `Int8WeightConv2d` store conv weights); activations stay fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["int8_weight", "round_frozen_convs_to_int8"]


def int8_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(int8 values, fp32 scale per output channel) of a conv weight (O, I, kh, kw)."""
    w = weight.detach()
    scale = w.abs().amax(dim=tuple(range(1, w.ndim))).clamp_min(1e-12) / 127.0
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = torch.round(w / scale.view(shape)).clamp(-127, 127).to(torch.int8)
    return q, scale


def round_frozen_convs_to_int8(model: nn.Module) -> int:
    """In place: every Conv2d whose weight does not train gets the weight its int8 form
    dequantizes to (int8 × scale, in fp32, as the device computes it). Returns how many."""
    count = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.requires_grad:
                q, scale = int8_weight(m.weight)
                m.weight.copy_(q * scale.view(-1, 1, 1, 1))
                count += 1
    return count
