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

With `teacher_momentum` (not in the paper) the meta networks learn from a mean teacher of
themselves instead of their own entropy, CoTTA's recipe applied to the meta weights only, and
with `teacher_views` from augmented views too, the more confident prediction per sample.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from edgeadapt._registry import register_method
from edgeadapt.config import EcoTTAConfig
from edgeadapt.errors import InputError
from edgeadapt.losses import (
    confidence_weights,
    entropy,
    entropy_margin,
    lean_l1,
    soft_cross_entropy,
)
from edgeadapt.methods._augment import augmented_views
from edgeadapt.methods._state import (
    no_running_stat_updates,
    stochastic_restore,
    use_test_statistics,
)
from edgeadapt.methods.base import Adapter
from edgeadapt.modules.int8 import round_frozen_convs_to_int8
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
        if c.frozen_weights == "int8":  # before the meta networks exist: they stay fp32
            round_frozen_convs_to_int8(model)
        if c.parts is not None:
            parts = resolve_parts(model, c.parts, example_input)
        else:
            parts = auto_parts(model, c.num_parts, example_input, c.skip_stages)
        with torch.random.fork_rng(devices=[]):  # meta-network init follows the config's seed
            torch.manual_seed(c.seed)
            self.part_names = attach_meta_parts(model, parts, c.meta_kernel_size, c.recompute)
        meta_bns = set()
        for part in _meta_parts(model):
            for net in (part.adapter_bn, part.adapter_conv):
                net.requires_grad_(True)
                net.train()
            meta_bns |= {part.adapter_bn, part.adapter_conv.bn}
        # The meta BNs normalise over the stream too (with the frozen ones on "batch"), so a
        # single frame is not normalised by itself, which erases it after pooling. With no
        # window they stay ordinary BNs: each batch's own statistics, running ones tracked.
        bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        if c.stat_window is not None:
            streamed = bns if c.frozen_bn == "batch" else [m for m in bns if m in meta_bns]
            use_test_statistics(streamed, c.stat_window, c.own_statistics_from)
        elif c.frozen_bn == "batch":
            use_test_statistics([m for m in bns if m not in meta_bns], None)
        if c.lean:
            make_lean(model, skip=(MetaConvBlock,))
        # H0 of the sample weights, and the filter (which memory planning opens to every sample).
        self.entropy_reference = entropy_margin(c.entropy_margin, self.num_classes)
        self.entropy_threshold = self.entropy_reference
        if c.teacher_momentum is not None:
            # Buffers, so the teacher is saved, resumed and reset with the adapter. Named
            # `teacher_weights`: a submodule called `meta`, `graph` or `code` breaks export.
            self.teacher_weights = nn.Module()
            meta = _meta_parameters(model)
            self._teacher_names = [name for name, _ in meta]
            for name, p in meta:
                self.teacher_weights.register_buffer(_buffer_name(name), p.detach().clone())
        return model

    def trainable_parameters(self):  # type: ignore[override]
        for part in _meta_parts(self.model):
            yield from part.adapter_bn.parameters()
            yield from part.adapter_conv.parameters()

    def _forward_with_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits, and the self-distilled term: mean L1 between each part's adapted output and
        its frozen output (the frozen part applied to the same adapted input).

        Each part's term is taken as soon as the part has run, so its frozen output is freed
        there and then: holding all of them to the end of the forward was most of the step's
        peak memory."""
        terms: list[Tensor] = []
        handles = []
        for part in _meta_parts(self.model):
            frozen: list[Tensor] = []
            handles.append(
                part.frozen.register_forward_hook(lambda _m, _a, out, f=frozen: f.append(out))
            )
            handles.append(
                part.register_forward_hook(
                    lambda _m, _a, out, f=frozen: terms.append(lean_l1(out, f.pop()))
                )
            )
        try:
            logits = self.model(x)
        finally:
            for h in handles:
                h.remove()
        reg = sum(terms, torch.zeros(()))
        return logits, reg / max(len(terms), 1)

    def loss(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        if self.config.teacher_momentum is not None:
            target = self._teacher_target(x)
            logits, reg = self._forward_with_parts(x)
            return soft_cross_entropy(logits, target).mean() + self.config.reg_weight * reg, target
        logits, reg = self._forward_with_parts(x)
        ent = entropy(logits)
        keep = ent < self.entropy_threshold
        if not bool(keep.any()):
            return None, logits
        kept = ent[keep]
        if self.config.entropy_weighting:
            kept = kept * confidence_weights(kept, self.entropy_reference)
        return kept.mean() + self.config.reg_weight * reg, logits

    def _teacher(self) -> dict[str, Tensor]:
        """The teacher's weights by the names of the meta weights they average."""
        return {n: getattr(self.teacher_weights, _buffer_name(n)) for n in self._teacher_names}

    @torch.no_grad()
    def _teacher_target(self, x: Tensor) -> Tensor:
        """The teacher's prediction of `x`; with views, per sample the more confident of it and
        the average over the augmented views."""
        c = self.config
        teacher = self._teacher()
        with no_running_stat_updates(self.model):
            target = functional_call(self.model, teacher, (x,), strict=False)
            if not c.teacher_views:
                return target
            averaged = self._view_average(x, teacher, c.teacher_views, c.input_mean, c.input_std)
        return more_confident(averaged, target)

    def _view_average(
        self,
        x: Tensor,
        teacher: dict[str, Tensor],
        count: int,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
    ) -> Tensor:
        """The teacher's logits averaged over `count` augmented views of `x`, one forward per
        view (each normalised with its own batch statistics)."""
        views = augmented_views(x, self.generator, count, mean, std)
        return view_average(self.model, teacher, views, count)

    def predict(self, x: Tensor) -> Tensor:
        if self.config.teacher_momentum is None:
            return super().predict(x)
        with torch.no_grad(), no_running_stat_updates(self.model):
            return functional_call(self.model, self._teacher(), (x,), strict=False)

    def prediction_network(self) -> nn.Module:
        if self.config.teacher_momentum is None:
            return self.model
        net = copy.deepcopy(self.model)
        teacher = self._teacher()
        with torch.no_grad():
            for name, p in net.named_parameters():
                if name in teacher:
                    p.copy_(teacher[name])
        return net

    def adapter_state_keys(self) -> list[str]:
        keys = super().adapter_state_keys()
        if self.config.teacher_momentum is not None:
            keys += [f"teacher_weights.{n}" for n, _ in self.teacher_weights.named_buffers()]
        return keys

    def _sync_teacher(self) -> None:
        if self.config.teacher_momentum is not None:
            with torch.no_grad():
                for name, t in self._teacher().items():
                    t.copy_(self.model.get_parameter(name))

    def after_step(self, x: Tensor, logits: Tensor) -> None:
        if self.config.teacher_momentum is not None:
            with torch.no_grad():
                for name, t in self._teacher().items():
                    t.lerp_(self.model.get_parameter(name), 1 - self.config.teacher_momentum)
        if self.config.restore_prob > 0:  # toward the reset point (wrap time, or after warm-up)
            named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
            initial = self._reset_point["state"]
            stochastic_restore([p for _, p in named], [initial[n] for n, _ in named],
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
        self._sync_teacher()  # the teacher starts from the warmed-up meta networks
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
            with no_running_stat_updates(self.model):  # a measurement: the stream is untouched
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


def view_average(model: nn.Module, teacher: dict[str, Tensor], views: Tensor, count: int) -> Tensor:
    """`model`'s logits with the `teacher` weights, averaged over `count` views stacked view
    after view; one forward per view, so each is normalised with its own batch statistics."""
    total = sum(functional_call(model, teacher, (v,), strict=False) for v in views.chunk(count))
    return total / count


def more_confident(a: Tensor, b: Tensor) -> Tensor:
    """Per sample, the logits of `a` where its top probability is higher than `b`'s, else `b`."""
    surer = a.softmax(1).amax(1) > b.softmax(1).amax(1)
    return torch.where(surer[:, None], a, b)


def _meta_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The meta networks' weights by their names in `model` (what the teacher averages)."""
    meta = {id(p) for part in _meta_parts(model)
            for net in (part.adapter_bn, part.adapter_conv) for p in net.parameters()}  # fmt: skip
    return [(n, p) for n, p in model.named_parameters() if id(p) in meta]


def _buffer_name(parameter_name: str) -> str:
    return parameter_name.replace(".", "__")


register_method(EcoTTAConfig, EcoTTAAdapter)
