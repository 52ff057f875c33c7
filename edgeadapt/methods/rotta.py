"""RoTTA (Yuan et al., "Robust Test-Time Adaptation in Dynamic Scenarios", CVPR 2023).

Made for correlated streams of small batches. Predictions come from a mean teacher whose BNs
normalise with stored statistics, so a frame never normalises with its own. Each frame goes
into a category-balanced memory bank under the teacher's pseudo-label (`_memory_bank`). Every
`update_every` frames the student (only BN affine parameters train) learns on a strong
augmentation of the whole bank from the teacher's soft labels on the bank, each frame weighted
by its timeliness exp(−age)/(1 + exp(−age)); then the teacher moves toward the student.

Robust BN: every BN of student and teacher keeps statistics that each update batch moves by
α = `robust_momentum` when the bank is full (`edgeadapt.modules.stream_norm` with a window of
memory_size / α samples, so a bank of n frames moves them by n / window). In an update the BNs
normalise with the moved statistics; the teacher's predictions use them as they stand. Our
mixture is of first and second moments, RoTTA's of variances: ours adds α(1 − α)·(bank mean −
stored mean)² to the variance, the spread between the two means, which RoTTA's leaves out.

Batches: frames enter the bank one by one and an update runs whenever the count of frames
reaches a multiple of `update_every`, so the updates do not depend on how the stream is
batched; a batch of 64 at update_every 16 runs 4 updates, each on the bank as it stood after
that frame. The prediction returned is the teacher's before the batch's updates. `steps` is
optimiser steps per update. `stat_window` and `small_batch` do not apply: the window is
RoTTA's, and no frame is normalised with its own statistics, so batches of one need no
fallback.

Memory: an update runs at the bank's batch (memory_size frames, 64 by default) whatever the
stream's batch, so the step's peak is that of a 64-frame backward through the BN affine
parameters (ResNet-20 on 32×32: 92 MiB kept for backward, as Tent at batch 64). The bank is state: memory_size·C·H·W floats (0.75 MiB for 64 CIFAR frames), saved
with the adapter. `prepare_memory_probe` makes the next call run an update on a full bank.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgeadapt._registry import register_method
from edgeadapt.config import RoTTAConfig
from edgeadapt.errors import ConfigError, InputError
from edgeadapt.losses import entropy, soft_cross_entropy
from edgeadapt.methods._augment import augmented_views
from edgeadapt.methods._memory_bank import MemoryBank
from edgeadapt.methods.base import Adapter
from edgeadapt.modules.stream_norm import StreamBatchNorm2d, use_stream_statistics

__all__ = ["RoTTAAdapter", "timeliness"]


def timeliness(ages: Tensor) -> Tensor:
    """RoTTA's per-frame loss weight exp(−a)/(1 + exp(−a)), ages `a` as fractions of the
    bank's capacity: recent frames count more."""
    return torch.sigmoid(-ages)


@contextlib.contextmanager
def _robust_bn_training(model: nn.Module) -> Iterator[None]:
    """The teacher's robust BNs in training mode for an update (they move their statistics
    toward the bank's); at rest they stay in eval mode, so predictions and exports use the
    stored statistics."""
    bns = [m for m in model.modules() if isinstance(m, StreamBatchNorm2d)]
    for m in bns:
        m.train()
    try:
        yield
    finally:
        for m in bns:
            m.eval()


class RoTTAAdapter(Adapter):
    config: RoTTAConfig

    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        c = self.config
        model.eval()
        model.requires_grad_(False)
        window = max(1, round(c.memory_size / c.robust_momentum))
        for name, m in model.named_modules():
            if not isinstance(m, _BatchNorm):
                continue
            if isinstance(m, nn.BatchNorm2d):
                if m.running_mean is None:
                    raise ConfigError(
                        f"BN {name!r} keeps no running statistics, which RoTTA's robust BN "
                        "starts from; use a model whose BNs track them (or another method)"
                    )
                use_stream_statistics(m, window)
            # Other BNs (1d, 3d) keep their source statistics; their affine still trains.
            if m.affine:
                m.weight.requires_grad_(True)
                m.bias.requires_grad_(True)
        self.teacher = _teacher_of(model)
        dtype = next(model.parameters()).dtype
        self.bank = MemoryBank(
            c.memory_size, self.num_classes, tuple(example_input.shape[1:]),
            lambda_t=c.lambda_t, lambda_u=c.lambda_u, dtype=dtype,
        )  # fmt: skip
        # Frames seen since wrap (or reset): when it reaches a multiple of update_every, update.
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long))
        return model

    def adapter_state_keys(self) -> list[str]:
        student = super().adapter_state_keys()  # the BNs: affine and statistics
        teacher = ["teacher." + k.removeprefix("model.") for k in student if k.startswith("model.")]
        bank = ["bank." + n for n, _ in self.bank.named_buffers()]
        return [*student, *teacher, *bank, "samples_seen"]

    def predict(self, x: Tensor) -> Tensor:
        with torch.no_grad():  # the teacher's BNs are in eval mode: nothing moves
            return self.teacher(x)

    def prediction_network(self) -> nn.Module:
        return self.teacher

    # ---- the stream ------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        self._validate(x)
        if self._frozen_depth:
            return self.predict(x)
        if self.config.episodic:
            self.reset()
        self._fit_bank(tuple(x.shape[1:]))
        logits = self.predict(x)
        labels, uncertainty = logits.argmax(dim=1).tolist(), entropy(logits).tolist()
        for frame, label, u in zip(x, labels, uncertainty):
            self.bank.add(frame, label, u)
            self.samples_seen += 1
            if int(self.samples_seen) % self.config.update_every == 0:
                for _ in range(self.config.steps):
                    self._step(self.bank.frames())
        return logits

    def loss(self, frames: Tensor) -> tuple[Tensor | None, Tensor]:
        """`frames`: the bank's (`self.bank.frames()`, ages alike)."""
        c = self.config
        views = augmented_views(frames, self.generator, 1, c.input_mean, c.input_std)
        with torch.no_grad(), _robust_bn_training(self.teacher):
            target = self.teacher(frames)
        if self.optimizer is None:  # no BN affine to train: the statistics still follow
            return None, target
        per_frame = soft_cross_entropy(self.model(views), target)
        return (per_frame * timeliness(self.bank.ages())).mean(), target

    @torch.no_grad()
    def after_step(self, x: Tensor, logits: Tensor) -> None:
        # Only the trained parameters: the frozen ones are equal already and must stay
        # bit-identical. The BN statistics are each network's own (the teacher's follow the bank).
        for t, s in zip(self.teacher.parameters(), self.model.parameters(), strict=True):
            if s.requires_grad:
                t.lerp_(s, 1 - self.config.teacher_momentum)

    def prepare_memory_probe(self, input_shape: tuple[int, ...] | None = None) -> None:
        """Make the next call run an update on a full bank (the costliest call, which a memory
        measurement wants) by filling the bank with random frames shaped like `input_shape`
        (N, C, H, W; None: the bank's frame shape) and setting the frame count one short of
        an update. Changes this adapter: call it on a copy."""
        shape = self.bank.frame_shape if input_shape is None else tuple(input_shape[1:])
        gen = torch.Generator().manual_seed(0)
        frames = torch.randn(self.config.memory_size, *shape, generator=gen)
        self.bank.fill(frames.to(self.bank.data))
        self.samples_seen.fill_(self.config.update_every - 1)

    def update_input_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The batch an update trains on when the stream comes in batches of `input_shape`:
        the bank's, memory_size frames (for planning models of the step's memory)."""
        return (self.config.memory_size, *tuple(input_shape)[1:])

    # ---- the bank's frame shape follows the stream's ---------------------------------------
    def _fit_bank(self, frame_shape: tuple[int, ...]) -> None:
        if frame_shape == self.bank.frame_shape:
            return
        if len(self.bank):
            raise InputError(
                f"RoTTA's memory bank holds frames shaped {self.bank.frame_shape}; this batch's "
                f"are {frame_shape}. Give the adapter frames of one shape, or reset() it to "
                "start a bank of the new shape"
            )
        self.bank.fit_frames(frame_shape)

    def _restore(self, captured: dict[str, Any]) -> None:
        # The saved bank may hold frames of another shape than the bank now (wrap-time's
        # example input, say): everything is overwritten, so take its shape first.
        self.bank.fit_frames(tuple(captured["state"]["bank.data"].shape[1:]))
        super()._restore(captured)

    def load_resume_state(self, saved: dict[str, Any]) -> None:
        with self._empty_bank_shaped_like(saved.get("state", {}).get("bank.data")):
            super().load_resume_state(saved)

    def load_adapter_state_dict(self, state: dict[str, Tensor]) -> None:
        with self._empty_bank_shaped_like(state.get("bank.data")):
            super().load_adapter_state_dict(state)

    @contextlib.contextmanager
    def _empty_bank_shaped_like(self, data: Tensor | None) -> Iterator[None]:
        """An empty bank (a fresh adapter) takes the shape of the frames being loaded, and
        goes back to its own if the load is refused."""
        previous = self.bank.frame_shape
        if data is not None and not len(self.bank):
            self.bank.fit_frames(tuple(data.shape[1:]))
        try:
            yield
        except BaseException:
            self.bank.fit_frames(previous)
            raise


def _teacher_of(student: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(student).requires_grad_(False)
    for m in teacher.modules():
        if isinstance(m, StreamBatchNorm2d):
            m.eval()  # stored statistics at rest (see _robust_bn_training)
    return teacher


register_method(RoTTAConfig, RoTTAAdapter)
