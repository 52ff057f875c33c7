"""SAR (Niu et al., "Towards Stable Test-Time Adaptation in Dynamic Wild World", ICLR 2023).

Tent's parameters (BN affine), trained by three changes that keep entropy minimisation from
collapsing on wild streams:

- reliable entropy: only samples with entropy < margin · ln(C) count; none kept, no update;
- a sharpness-aware step (SAM): the gradient of that entropy at θ gives ε = ρ·g/‖g‖ (one norm
  over all trained tensors); the entropy of the same samples at θ + ε, filtered again, gives
  the gradient the optimiser steps θ with, so the model moves toward flat minima of the
  entropy, where a few noisy samples' large gradients do less harm;
- model recovery: when a moving average of that second entropy falls below `reset_below`,
  the model is taken to have collapsed onto trivial, confident predictions, and the trained
  parameters and optimiser go back to the reset point.

All BN affine parameters train, as in Tent; the authors' code leaves out the last stage's
(ResNet layer4, ViT blocks 9-11), a choice for their ImageNet models not made here.

Batch 1: the paper swaps BN for GroupNorm / LayerNorm models there, since a single frame's
own statistics are useless. Here BNs normalise with stream statistics
(`edgeadapt.modules.stream_norm`, `stat_window`), which a single frame only nudges, so the BN
model itself adapts at batch 1.

Learning rate: the paper scales it with the batch (ResNet-50: 2.5e-4 at batch >= 32, else
2.5e-4 · 2 · N / 64, then doubled for SAR at N = 1, i.e. ~1.6e-5); here `lr` is what it says,
at every batch size, and scaling is the caller's choice.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from edgeadapt._registry import register_method
from edgeadapt.config import SARConfig
from edgeadapt.losses import entropy, entropy_margin
from edgeadapt.methods._state import no_running_stat_updates
from edgeadapt.methods.base import AdaptationDivergedError, Adapter
from edgeadapt.methods.tent import configure_bn_affine
from edgeadapt.modules.stream_norm import StreamBatchNorm2d, stream_state, stream_state_as

__all__ = ["SARAdapter"]


class SARAdapter(Adapter):
    """SAR on the base class; `_step` (two forwards, two backwards, one optimiser step)
    takes the place of the `loss` hook.

    Model recovery restores the trained parameters and the optimiser, and keeps the BNs'
    stream statistics: those are observations of the stream the model is on now, not learnt
    weights, and going back to older ones would normalise the next frames for a stream that
    has moved on. `recoveries` counts the recoveries since the reset point.
    """

    config: SARConfig

    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        self.entropy_threshold = entropy_margin(self.config.entropy_margin, self.num_classes)
        self.loss_average: float | None = None  # moving average of the second step's entropy
        self.recoveries = 0
        return configure_bn_affine(
            model, self.config.lean, self.config.stat_window, self.config.own_statistics_from
        )

    def trainable_parameters(self):  # type: ignore[override]
        return (p for p in self.model.parameters() if p.requires_grad)

    def _reliable_entropy(
        self, logits: Tensor, among: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor]:
        """Mean entropy of the reliable samples (of those in `among`), and the mask of them;
        None when there are none."""
        ent = entropy(logits)
        # The filter would drop NaN silently (NaN < t is false) and a diverged model would go
        # on predicting NaN: refuse it as the base class refuses a NaN loss.
        self._check_finite(ent)
        keep = ent.detach() < self.entropy_threshold
        if among is not None:
            keep &= among
        if not bool(keep.any()):
            return None, keep
        return ent[keep].mean(), keep

    @torch.enable_grad()  # adapting needs gradients even when the caller runs under no_grad
    def _step(self, x: Tensor) -> Tensor:
        before = stream_state(self.model)  # what the first forward normalises with
        logits = self.model(x)
        loss, keep = self._reliable_entropy(logits)
        if loss is not None:
            self._sharpness_aware_update(x, loss, keep, before)
        self.after_step(x, logits)
        self.steps_taken += 1
        return logits.detach()

    def _sharpness_aware_update(
        self,
        x: Tensor,
        loss: Tensor,
        keep: Tensor,
        before: list[tuple[StreamBatchNorm2d, Tensor, Tensor]],
    ) -> None:
        assert self.optimizer is not None
        params = list(self.trainable_parameters())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = self.config.rho / (norm + 1e-12)  # as SAM: a zero gradient gives ε = 0
        # Copies, not θ + ε − ε: the step must start from θ exactly, not from a rounding of it.
        theta = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_(g * scale)
        try:
            # The same batch through the same normalisation as the first forward (the stream
            # statistics from before it, changed by neither): both entropies are of one
            # function, at θ and θ + ε, and one frame stays one observation of the stream.
            with no_running_stat_updates(self.model), stream_state_as(before):
                second, _ = self._reliable_entropy(self.model(x), among=keep)
            if second is not None:
                self.optimizer.zero_grad(set_to_none=True)
                second.backward()
        finally:
            with torch.no_grad():
                for p, t in zip(params, theta):
                    p.copy_(t)
        if second is None:  # nothing reliable at θ + ε: no gradient to step with
            return
        self.optimizer.step()
        value = second.item()
        m = self.config.loss_ema
        self.loss_average = (
            value if self.loss_average is None else m * self.loss_average + (1 - m) * value
        )
        if self.loss_average < self.config.reset_below:
            self._recover()

    def _check_finite(self, ent: Tensor) -> None:
        bad = ent.detach()[~torch.isfinite(ent.detach())]
        if bad.numel():
            raise AdaptationDivergedError(
                f"adaptation loss (an entropy) is {bad[0].item()} at step {self.steps_taken}; the "
                "update was not applied. Lower the learning rate, or reset() the adapter."
            )

    def _recover(self) -> None:
        """The trained parameters and optimiser back to the reset point; the stream statistics
        stay (see the class docstring)."""
        saved = self._reset_point
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.requires_grad:
                    p.copy_(saved["state"][name])
        assert self.optimizer is not None
        # A copy: load_state_dict keeps the tensors it is given, and steps change them in place.
        self.optimizer.load_state_dict(copy.deepcopy(saved["optimizer"]))
        self.loss_average = None
        self.recoveries += 1

    def _extra_state(self) -> dict[str, Any]:
        return {"loss_average": self.loss_average, "recoveries": self.recoveries}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.loss_average, self.recoveries = state["loss_average"], state["recoveries"]


register_method(SARConfig, SARAdapter)
