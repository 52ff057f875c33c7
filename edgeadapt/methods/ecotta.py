"""EcoTTA (Song et al., "EcoTTA: Memory-Efficient Continual Test-time Adaptation via
Self-distilled Regularization", CVPR 2023).

The backbone stays frozen. K parts of it get small meta networks (a BN on the part's output
plus a conv block on its input, as a residual; `edgeadapt.modules.meta`), and only those
train: entropy minimisation on confident samples, plus a self-distilled L1 term that keeps
each part's adapted output near what the frozen part computes from the same input. With the
memory-lean frozen path (`edgeadapt.modules.lean`) backward keeps the meta networks' inputs
and 1-bit masks, not the frozen layers' activations.

Meta networks are warmed up on labelled source data first (`warmup`). Note: EcoTTA is
patented by its authors' company; see the README.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgeadapt._registry import register_method
from edgeadapt.config import EcoTTAConfig
from edgeadapt.errors import InputError
from edgeadapt.losses import confidence_weights, entropy, entropy_margin, lean_l1
from edgeadapt.methods._state import stochastic_restore, use_batch_statistics
from edgeadapt.methods.base import Adapter
from edgeadapt.modules.lean import make_lean
from edgeadapt.modules.meta import MetaConvBlock, MetaPart
from edgeadapt.modules.partition import attach_meta_parts, auto_parts, resolve_parts

__all__ = ["EcoTTAAdapter"]


class EcoTTAAdapter(Adapter):
    config: EcoTTAConfig

    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        c = self.config
        model.eval()
        model.requires_grad_(False)
        if c.frozen_bn == "batch":
            for m in model.modules():
                if isinstance(m, _BatchNorm):
                    use_batch_statistics(m)
        if c.parts is not None:
            parts = resolve_parts(model, c.parts, example_input)
        else:
            parts = auto_parts(model, c.num_parts, example_input)
        with torch.random.fork_rng(devices=[]):  # meta-network init follows the config's seed
            torch.manual_seed(c.seed)
            self.part_names = attach_meta_parts(model, parts, c.meta_kernel_size, c.recompute)
        for part in _meta_parts(model):
            for net in (part.adapter_bn, part.adapter_conv):
                net.requires_grad_(True)
                net.train()
        if c.lean:
            make_lean(model, skip=(MetaConvBlock,))
        # H0 of the sample weights, and the filter (which memory planning opens to every sample).
        self.entropy_reference = entropy_margin(c.entropy_margin, self.num_classes)
        self.entropy_threshold = self.entropy_reference
        return model

    def trainable_parameters(self):  # type: ignore[override]
        for part in _meta_parts(self.model):
            yield from part.adapter_bn.parameters()
            yield from part.adapter_conv.parameters()

    def _forward_with_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits, and the self-distilled term: mean L1 between each part's adapted output and
        its frozen output (the frozen part applied to the same adapted input)."""
        pairs: list[list[Tensor]] = []
        handles = []
        for part in _meta_parts(self.model):
            slot: list[Tensor] = []
            pairs.append(slot)
            handles.append(
                part.frozen.register_forward_hook(lambda _m, _a, out, s=slot: s.append(out))
            )
            handles.append(part.register_forward_hook(lambda _m, _a, out, s=slot: s.append(out)))
        try:
            logits = self.model(x)
        finally:
            for h in handles:
                h.remove()
        reg = sum((lean_l1(adapted, frozen) for frozen, adapted in pairs), torch.zeros(()))
        return logits, reg / max(len(pairs), 1)

    def loss(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        logits, reg = self._forward_with_parts(x)
        ent = entropy(logits)
        keep = ent < self.entropy_threshold
        if not bool(keep.any()):
            return None, logits
        kept = ent[keep]
        if self.config.entropy_weighting:
            kept = kept * confidence_weights(kept, self.entropy_reference)
        return kept.mean() + self.config.reg_weight * reg, logits

    def after_step(self, x: Tensor, logits: Tensor) -> None:
        if self.config.restore_prob > 0:  # toward the reset point (wrap time, or after warm-up)
            named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
            stochastic_restore([p for _, p in named], [self._initial[n] for n, _ in named],
                               self.config.restore_prob, self.generator)  # fmt: skip

    def warmup(
        self,
        batches: Iterable[tuple[Tensor, Tensor]],
        *,
        epochs: int = 1,
        lr: float = 1e-3,
        calibration_batches: int = 20,
        max_steps: int | None = None,
        progress: bool = True,
    ) -> dict[str, float]:
        """Warm the meta networks up on labelled source data: cross-entropy plus the
        self-distilled term. First each part's output BN is calibrated to start as the
        identity, so the wrapped model begins as the source model. Makes the result the
        reset point and returns the last loss and accuracy."""
        from tqdm.auto import tqdm

        batches = list(batches) if not isinstance(batches, (list, tuple)) else batches
        if not batches:
            raise InputError("warmup got no batches; pass an iterable of (images, labels)")
        self._calibrate(batches[:calibration_batches])
        opt = torch.optim.Adam(list(self.trainable_parameters()), lr=lr)
        total = (
            len(batches) * epochs if max_steps is None else min(max_steps, len(batches) * epochs)
        )
        bar = tqdm(total=total, desc="EcoTTA warm-up", disable=not progress, leave=False)
        step, last = 0, {"loss": float("nan"), "accuracy": float("nan")}
        device = next(self.parameters()).device
        with torch.enable_grad():
            for _ in range(epochs):
                for x, y in batches:
                    if step >= total:
                        break
                    x, y = x.to(device), y.to(device)
                    self._validate(x)
                    logits, reg = self._forward_with_parts(x)
                    loss = F.cross_entropy(logits, y) + self.config.reg_weight * reg
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    last = {
                        "loss": float(loss.detach()),
                        "accuracy": float((logits.argmax(1) == y).float().mean()),
                    }
                    bar.update(1)
                    bar.set_postfix(last)
        bar.close()
        self.snapshot()
        return last

    @torch.no_grad()
    def _calibrate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        parts = _meta_parts(self.model)
        sums: list[list[Tensor]] = [[] for _ in parts]
        handles = [
            p.frozen.register_forward_hook(
                lambda _m, _a, out, i=i: sums[i].append(_channel_moments(out))
            )
            for i, p in enumerate(parts)
        ]
        modes = [(p, p.adapter_bn.training) for p in parts]
        try:
            for p in parts:  # eval BN with unit statistics is the identity: original activations
                p.adapter_bn.eval()
                p.adapter_bn.reset_running_stats()
                p.adapter_bn.reset_parameters()
            device = next(self.parameters()).device
            for x, _ in batches:
                self._validate(x)
                self.model(x.to(device))
        finally:
            for h in handles:
                h.remove()
            for p, mode in modes:
                p.adapter_bn.train(mode)
        for part, moments in zip(parts, sums):
            m = torch.stack(moments).mean(0)
            mean, sq = m[0], m[1]
            part.calibrate_identity(mean, (sq - mean**2).clamp_min(0))


def _channel_moments(t: Tensor) -> Tensor:
    return torch.stack([t.mean(dim=(0, 2, 3)), (t * t).mean(dim=(0, 2, 3))])


def _meta_parts(model: nn.Module) -> list[MetaPart]:
    return [m for m in model.modules() if isinstance(m, MetaPart)]


register_method(EcoTTAConfig, EcoTTAAdapter)
