"""The training-time delta activation: a learned per-channel quantiser.

Yousefzadeh & Sifalakis 2021, "Training for temporal sparsity in deep neural networks,
application in video processing" (arXiv 2107.07305). Activations are snapped to a grid
q·round(x/q) so that, between consecutive video frames, most of them do not move at all:
their temporal delta is an exact zero and the next layer can skip it. The step q is learned
per channel (LSQ, Esser et al. 2020), parametrised as log q so it stays positive.

`forward` is pure (no state, no stashed losses) so `torch.export` captures it; the temporal
sparsity penalty is computed outside, by `edgeadapt.delta.penalty`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edgeadapt.errors import ConfigError, InputError

__all__ = ["CALIBRATION_QUANTILE", "DeltaActivation", "round_ste"]

# The share of each channel's calibration values that fits in 2**bits - 1 steps (the rest
# saturate in a runtime that clamps there; `deltaify`'s docstring).
CALIBRATION_QUANTILE = 0.999


def round_ste(x: Tensor) -> Tensor:
    """round(x) forward, identity backward (straight-through estimator).

    The value is exactly round(x): r - x is exact for |r - x| <= 0.5 (Sterbenz), and adding x
    back gives the representable r exactly, so grid values stay bit-exact for delta inference.
    """
    return (x.round() - x).detach() + x


def _scale_grad(x: Tensor, scale: float) -> Tensor:
    """x forward, gradient multiplied by `scale` backward (LSQ's step-gradient scaling)."""
    scaled = x * scale
    return (x - scaled).detach() + scaled


class DeltaActivation(nn.Module):
    """Quantise activations to a learned per-channel grid: y = q_c · round(x / q_c).

    Channels are dim 1 (N, C, ...), as for conv feature maps and (N, features) vectors.
    Gradients: straight-through for round; for q the LSQ gradient round(x/q) - x/q, scaled
    by 1/sqrt(elements per channel) so the step learns at a rate comparable to the weights.

    Args:
        num_channels: size of dim 1 of the activation this quantises.
        init_step: initial step size, a scalar or one value per channel (must be > 0).
        fan_out_macs: MACs one non-zero delta of this activation triggers in the layer(s)
            that consume it; `deltaify` fills it in, the sparsity penalty weights by it.
    """

    def __init__(
        self, num_channels: int, *, init_step: float | Tensor = 1.0, fan_out_macs: float = 0.0
    ) -> None:
        super().__init__()
        if num_channels < 1:
            raise ConfigError(f"num_channels must be >= 1, got {num_channels}")
        step = torch.as_tensor(init_step, dtype=torch.float32).flatten()
        if step.numel() == 1:
            step = step.expand(num_channels)
        if step.numel() != num_channels or not bool((step > 0).all()):
            raise ConfigError(
                f"init_step must be positive, one value or {num_channels}; got {init_step}"
            )
        self.num_channels = num_channels
        self.log_step = nn.Parameter(step.log().clone())
        # A buffer, not an attribute: it travels with state_dict next to the step it weights.
        self.register_buffer("fan_out_macs", torch.tensor(float(fan_out_macs), dtype=torch.float64))

    @property
    def step(self) -> Tensor:
        """The per-channel step q = exp(log_step), shape (C,)."""
        return self.log_step.exp()

    def _check(self, x: Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise InputError(
                f"DeltaActivation expects (N, {self.num_channels}, ...) with channels in dim 1; "
                f"got shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        per_channel = max(x.numel() // self.num_channels, 1)
        log_step = _scale_grad(self.log_step, 1.0 / math.sqrt(per_channel))
        step = log_step.exp().to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        return round_ste(x / step) * step

    @torch.no_grad()
    def init_step_from(
        self, x: Tensor, *, bits: int = 8, quantile: float = CALIBRATION_QUANTILE
    ) -> None:
        """Set q_c so the `quantile` of |x_c| spans 2**bits - 1 steps (activation statistics).

        A channel that is all zeros (a dead ReLU) gets the largest step of the others, so it
        still quantises sensibly if it wakes up during training.
        """
        self._check(x)
        if bits < 1 or not 0.0 < quantile <= 1.0:
            raise ConfigError(f"need bits >= 1 and 0 < quantile <= 1; got {bits}, {quantile}")
        per_channel = x.detach().transpose(0, 1).reshape(self.num_channels, -1).abs().float()
        k = max(1, math.ceil(quantile * per_channel.shape[1]))
        # kthvalue, not torch.quantile: quantile refuses inputs above 16M elements.
        scale = per_channel.kthvalue(k, dim=1).values
        fallback = scale.max() if bool((scale > 0).any()) else scale.new_tensor(1.0)
        scale = torch.where(scale > 0, scale, fallback)
        self.log_step.copy_((scale / (2**bits - 1)).log())

    def extra_repr(self) -> str:
        return f"{self.num_channels}, fan_out_macs={float(self.fan_out_macs):g}"
