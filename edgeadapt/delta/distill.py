"""Train a deltaified model for temporal sparsity without labels: distil from its dense self.

Yousefzadeh & Sifalakis 2021 (arXiv 2107.07305) train with a task loss plus the temporal
sparsity penalty. On a device's own footage there are no labels, so the task loss here is
distillation from the frozen dense model (the same weights without quantisers): KL between
softened logits, or MSE on logits. The student (a copy) learns weights and quantiser steps
that keep its predictions while making consecutive frames' activations stay on the same
grid points. Clips are consecutive frames, laid out clip-major as the penalty expects.

Granularity. `temporal_sparsity_loss` (element) counts every changed activation: the MACs
the runtime's element-sparse conv path (`sparse_elements`) performs. Its pixel path skips
only whole pixels (a pixel costs its full fan-out if any channel changed);
`pixel_sparsity_loss` is the matching relaxation, a group-lasso over channels: per pixel
the L2 norm of Δ in quantiser steps (>= 1 for every changed pixel), MAC-weighted like the
element penalty, so it upper-bounds the fraction of pixel-sparse MACs performed.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt._atomic import atomic_path
from edgeadapt.delta.deltaify import delta_activations
from edgeadapt.delta.errors import NotDeltaifiedError
from edgeadapt.delta.penalty import (
    ActivationRecord,
    collect_delta_activations,
    frame_deltas,
    mac_weighted_mean,
    step_like,
    temporal_sparsity_loss,
)
from edgeadapt.delta.quantize import DeltaActivation
from edgeadapt.delta.structure import strip_delta
from edgeadapt.errors import CheckpointMismatchError, ConfigError, InputError

__all__ = [
    "DistillConfig",
    "DistillResult",
    "distill_for_sparsity",
    "load_delta_weights",
    "make_clips",
    "pixel_sparsity_loss",
    "save_delta_weights",
]


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Settings of `distill_for_sparsity`."""

    steps: int = 200  # optimiser steps
    clip_length: int = 8  # T consecutive frames per clip
    clips_per_batch: int = 4  # clips per step: a batch of clips_per_batch * T frames
    lr: float = 1e-4  # Adam learning rate of the weights
    step_lr: float = 1e-2  # Adam learning rate of the quantisers' log steps
    sparsity_weight: float = 0.05  # λ: loss = distillation + λ · penalty
    loss: Literal["kl", "mse"] = "kl"  # distillation loss on the logits
    temperature: float = 1.0  # softening of both distributions for "kl"
    granularity: Literal["pixel", "element"] = "pixel"  # which penalty (module docstring)
    train_weights: bool = True  # False: only the quantiser steps train
    seed: int = 0  # clip sampling order

    def __post_init__(self) -> None:
        if self.steps < 0 or self.clip_length < 2 or self.clips_per_batch < 1:
            raise ConfigError(f"need steps >= 0, clip_length >= 2, clips_per_batch >= 1: {self}")
        if self.lr < 0 or self.step_lr < 0 or self.sparsity_weight < 0 or self.temperature <= 0:
            raise ConfigError(f"learning rates and sparsity_weight >= 0, temperature > 0: {self}")
        if self.loss not in ("kl", "mse") or self.granularity not in ("pixel", "element"):
            raise ConfigError(f"loss must be kl|mse and granularity pixel|element: {self}")


@dataclass
class DistillResult:
    """The trained copy and what training did (penalties on a fixed batch of clips)."""

    model: nn.Module
    config: DistillConfig
    penalty_before: float
    penalty_after: float
    distill_before: float
    distill_after: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # per step

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary (without the model and the per-step history)."""
        keys = ("penalty_before", "penalty_after", "distill_before", "distill_after", "seconds")
        return {"config": asdict(self.config), **{k: getattr(self, k) for k in keys}}


def pixel_sparsity_loss(records: list[ActivationRecord], clip_length: int) -> Tensor:
    """MAC-weighted mean over pixels of ||Δa / q||₂ across channels (module docstring)."""

    def layer(quantiser: DeltaActivation, act: Tensor) -> Tensor:
        delta = frame_deltas(act / step_like(quantiser, act), clip_length)
        delta = delta.reshape(*delta.shape[:2], act.shape[1], -1)  # (N, T-1, C, pixels)
        # eps inside the root keeps its gradient at an exact zero finite (0, not NaN);
        # subtracting sqrt(eps) keeps the penalty of an unchanged pixel exactly 0.
        return ((delta.pow(2).sum(2) + 1e-12).sqrt() - 1e-6).mean()

    return mac_weighted_mean(records, clip_length, layer)


def make_clips(frames: Tensor, clip_length: int, stride: int | None = None) -> Tensor:
    """(F, C, H, W) consecutive frames -> (N, T, C, H, W) windows starting every `stride`
    frames (default: non-overlapping)."""
    stride = stride or clip_length
    if frames.dim() != 4 or clip_length < 2 or stride < 1:
        raise InputError(f"need (F, C, H, W) frames, clip_length >= 2; got {tuple(frames.shape)}")
    if frames.shape[0] < clip_length:
        raise InputError(f"{frames.shape[0]} frames are fewer than one clip of {clip_length}")
    return frames.unfold(0, clip_length, stride).permute(0, 4, 1, 2, 3).contiguous()


def _distill_loss(student: Tensor, teacher: Tensor, config: DistillConfig) -> Tensor:
    if config.loss == "mse":
        return F.mse_loss(student, teacher)
    t = config.temperature
    kl = F.kl_div(
        F.log_softmax(student / t, 1),
        F.log_softmax(teacher / t, 1),
        log_target=True,
        reduction="batchmean",
    )
    return kl * t * t  # T² keeps gradient magnitudes comparable across temperatures


def _losses(student, teacher, clips, teacher_clips, config) -> tuple[Tensor, Tensor]:
    n, t = clips.shape[:2]
    with torch.no_grad():
        target = teacher(teacher_clips.reshape(n * t, *teacher_clips.shape[2:]))
    with collect_delta_activations(student) as records:
        out = student(clips.reshape(n * t, *clips.shape[2:]))
    if config.granularity == "pixel":
        penalty = pixel_sparsity_loss(records, t)
    else:
        penalty = temporal_sparsity_loss(records, t, in_steps=True)
    return _distill_loss(out, target, config), penalty


def distill_for_sparsity(
    model: nn.Module,
    clips: Tensor,
    config: DistillConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    teacher_clips: Tensor | None = None,
    progress: bool = False,
) -> DistillResult:
    """Train a copy of the deltaified `model` on unlabelled (N, T, C, H, W) `clips`.

    `teacher` defaults to `strip_delta(model)`, frozen. `teacher_clips` (same shape) lets the
    teacher see different frames than the student, e.g. raw frames while the student sees
    the input-hysteresis-filtered ones it will stream. `model` is not modified. BN layers
    run in eval mode (source statistics; a clip batch is not i.i.d.).
    """
    config = config or DistillConfig()
    if not delta_activations(model):
        raise NotDeltaifiedError("model has no DeltaActivation; run edgeadapt.delta.deltaify first")
    if clips.dim() != 5 or clips.shape[1] != config.clip_length:
        raise InputError(
            f"clips must be (N, {config.clip_length}, C, H, W), got {tuple(clips.shape)}"
        )
    teacher_clips = clips if teacher_clips is None else teacher_clips
    if teacher_clips.shape != clips.shape:
        raise InputError(
            f"teacher_clips {tuple(teacher_clips.shape)} != clips {tuple(clips.shape)}"
        )
    teacher = (teacher if teacher is not None else strip_delta(model)).eval().requires_grad_(False)
    student = copy.deepcopy(model).eval()
    flags = [p.requires_grad for p in student.parameters()]  # given back after training
    steps = [q.log_step for q in delta_activations(student)]
    step_ids = {id(p) for p in steps}
    weights = [p for p in student.parameters() if id(p) not in step_ids]
    student.requires_grad_(False)
    for p in steps + (weights if config.train_weights else []):
        p.requires_grad_(True)
    groups = [{"params": steps, "lr": config.step_lr}]
    if config.train_weights:
        groups.append({"params": weights, "lr": config.lr})
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(config.seed)
    # The before/after batch: clips spread evenly over the footage, not just its start.
    fixed = torch.linspace(0, len(clips) - 1, min(len(clips), 4 * config.clips_per_batch))
    fixed = fixed.round().long()

    def measure() -> tuple[float, float]:
        with torch.no_grad():
            d, p = _losses(student, teacher, clips[fixed], teacher_clips[fixed], config)
        return float(d), float(p)

    distill_before, penalty_before = measure()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    from tqdm.auto import tqdm

    for _ in tqdm(range(config.steps), desc="delta distillation", disable=not progress):
        idx = torch.randint(len(clips), (config.clips_per_batch,), generator=gen)
        with torch.enable_grad():  # callers may hold no_grad; training needs gradients
            distill, penalty = _losses(student, teacher, clips[idx], teacher_clips[idx], config)
            loss = distill + config.sparsity_weight * penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append({"distill": distill.item(), "penalty": penalty.item(), "loss": loss.item()})
    seconds = time.perf_counter() - start
    distill_after, penalty_after = measure()
    for p, flag in zip(student.parameters(), flags):
        p.requires_grad_(flag)
    return DistillResult(
        student, config, penalty_before, penalty_after, distill_before, distill_after, seconds,
        history,
    )  # fmt: skip


def save_delta_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write a deltaified model's state dict (weights, steps, fan-outs) atomically."""
    if not delta_activations(model):
        raise NotDeltaifiedError("model has no DeltaActivation; nothing delta-specific to save")
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def load_delta_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load `save_delta_weights` output into `model`, deltaified the same way; returns it.

    Read with `weights_only=True`: a weights file is untrusted input.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointMismatchError(
            f"{path} does not fit this deltaified model ({exc}); deltaify the same architecture "
            "the same way (graph deltaify vs deltaify_modules name quantisers differently)"
        ) from exc
    return model
