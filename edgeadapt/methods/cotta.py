"""CoTTA (Wang et al., "Continual Test-Time Domain Adaptation", CVPR 2022).

A student (every parameter trains) learns from a mean teacher. When the source model (the
anchor) is unsure, the teacher's pseudo-label averages many augmented views. After each step a
small random fraction of the student's weights returns to the source values (stochastic
restore), which keeps long runs from drifting. Predictions come from the teacher.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgeadapt._registry import register_method
from edgeadapt.config import CoTTAConfig
from edgeadapt.losses import soft_cross_entropy
from edgeadapt.methods._augment import augmented_views
from edgeadapt.methods._state import (
    no_running_stat_updates,
    per_group_batch_statistics,
    stochastic_restore,
    use_test_statistics,
)
from edgeadapt.methods.base import Adapter

__all__ = ["CoTTAAdapter"]


class CoTTAAdapter(Adapter):
    config: CoTTAConfig

    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        model.eval()
        bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        use_test_statistics(bns, self.config.stat_window, self.config.own_statistics_from)
        model.requires_grad_(True)
        self.anchor = copy.deepcopy(model).requires_grad_(False)  # the source model, kept as is
        self.teacher = copy.deepcopy(model).requires_grad_(False)  # EMA of the student
        return model

    def trainable_parameters(self):  # type: ignore[override]
        return (p for p in self.model.parameters() if p.requires_grad)

    def adapter_state_keys(self) -> list[str]:
        state = self.state_dict()
        keys = [k for k in state if k.startswith(("model.", "teacher."))]
        return keys + [k for k in self.stream_statistics_keys() if k not in keys]  # the anchor's

    def predict(self, x: Tensor) -> Tensor:
        with torch.no_grad(), no_running_stat_updates(self.teacher):
            return self.teacher(x)

    def prediction_network(self) -> nn.Module:
        return self.teacher

    def _pseudo_label(self, x: Tensor) -> Tensor:
        c = self.config
        with torch.no_grad():
            teacher_logits = self.teacher(x)
            confidence = self.anchor(x).softmax(dim=1).max(dim=1).values
            if c.augmentations == 0 or confidence.mean() >= c.confidence_threshold:
                return teacher_logits
            total = torch.zeros_like(teacher_logits)
            # The views are not frames of the stream: they leave its statistics alone.
            with no_running_stat_updates(self.teacher):
                for start in range(0, c.augmentations, c.views_per_pass):
                    count = min(c.views_per_pass, c.augmentations - start)
                    batch = augmented_views(x, self.generator, count, c.input_mean, c.input_std)
                    with per_group_batch_statistics(self.teacher, count):
                        total += self.teacher(batch).view(count, *teacher_logits.shape).sum(0)
            return total / c.augmentations

    def loss(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        target = self._pseudo_label(x)
        student = self.model(x)
        return soft_cross_entropy(student, target).mean(), target

    @torch.no_grad()
    def after_step(self, x: Tensor, logits: Tensor) -> None:
        c = self.config
        for t, s in zip(self.teacher.parameters(), self.model.parameters()):
            t.lerp_(s, 1 - c.teacher_momentum)
        if c.restore_prob > 0:
            stochastic_restore(
                list(self.model.parameters()), list(self.anchor.parameters()),
                c.restore_prob, self.generator,
            )  # fmt: skip


register_method(CoTTAConfig, CoTTAAdapter)
