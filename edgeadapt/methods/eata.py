"""EATA (Niu et al., "Efficient Test-Time Model Adaptation without Forgetting", ICML 2022).

Tent's parameters, but only reliable, non-redundant samples update the model: entropy below
a margin, and predictions unlike the running mean of recent ones; each is re-weighted by its
confidence. A Fisher-weighted L2 term, estimated on source data with `compute_fisher`, keeps
the parameters that matter for the source task near their source values (without it this is
EATA's ETA variant).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt._registry import register_method
from edgeadapt.config import EATAConfig
from edgeadapt.losses import confidence_weights, entropy, entropy_margin
from edgeadapt.methods.base import Adapter
from edgeadapt.methods.tent import configure_bn_affine

__all__ = ["EATAAdapter"]


class EATAAdapter(Adapter):
    config: EATAConfig

    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        # H0 of the weights
        self.entropy_reference = entropy_margin(self.config.entropy_margin, self.num_classes)
        self.entropy_threshold = self.entropy_reference  # the filter (memory planning lifts it)
        self.register_buffer("prob_mean", torch.zeros(self.num_classes))
        self.register_buffer("prob_mean_valid", torch.zeros((), dtype=torch.bool))
        self.fisher = nn.Module()  # buffers: weight_<i> = Fisher diagonal, anchor_<i> = θ₀
        self.selected_reliable = 0  # samples past the entropy filter (for reports)
        self.selected_total = 0  # samples past both filters
        return configure_bn_affine(
            model, self.config.lean, self.config.stat_window, self.config.own_statistics_from
        )

    def trainable_parameters(self):  # type: ignore[override]
        return (p for p in self.model.parameters() if p.requires_grad)

    def loss(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        logits = self.model(x)
        ent = entropy(logits)
        keep = ent < self.entropy_threshold
        self.selected_reliable += int(keep.sum())
        probs = logits.detach().softmax(dim=1)
        if bool(self.prob_mean_valid):
            cos = F.cosine_similarity(self.prob_mean.unsqueeze(0), probs, dim=1)
            keep &= cos.abs() < self.config.redundancy_margin
        n = int(keep.sum())
        self.selected_total += n
        if n == 0:
            return None, logits
        self._update_prob_mean(probs[keep])
        loss = (ent[keep] * confidence_weights(ent[keep], self.entropy_reference)).mean()
        return loss + self._fisher_penalty(), logits

    @torch.no_grad()
    def _update_prob_mean(self, probs: Tensor) -> None:
        mean = probs.mean(dim=0)
        if bool(self.prob_mean_valid):
            self.prob_mean.lerp_(mean, 1 - self.config.prob_ema)
        else:
            self.prob_mean.copy_(mean)
            self.prob_mean_valid.fill_(True)

    def _fisher_penalty(self) -> Tensor | float:
        if self.config.fisher_alpha == 0 or not hasattr(self.fisher, "weight_0"):
            return 0.0
        total = 0.0
        for i, p in enumerate(self.trainable_parameters()):
            total = (
                total
                + (
                    getattr(self.fisher, f"weight_{i}")
                    * (p - getattr(self.fisher, f"anchor_{i}")) ** 2
                ).sum()
            )
        return self.config.fisher_alpha * total

    def compute_fisher(
        self, batches: Iterable[Tensor | tuple[Tensor, ...]], max_batches: int | None = None
    ) -> None:
        """Estimate the Fisher diagonal of the trainable parameters on source images (labels,
        if given, are ignored: EATA uses the model's own predictions), then make the result
        part of the reset point."""
        params = list(self.trainable_parameters())
        fisher = [torch.zeros_like(p) for p in params]
        count = 0
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x.to(params[0].device)
            self._validate(x)
            with torch.enable_grad():
                logits = self.model(x)
                loss = F.cross_entropy(logits, logits.argmax(dim=1))
                grads = torch.autograd.grad(loss, params)
            for f, g in zip(fisher, grads):
                f += g.detach() ** 2
            count += 1
        if count == 0:
            raise ValueError("compute_fisher got no batches")
        for i, (f, p) in enumerate(zip(fisher, params)):
            self.fisher.register_buffer(f"weight_{i}", f / count)
            self.fisher.register_buffer(f"anchor_{i}", p.detach().clone())
        self.snapshot()

    def adapter_state_keys(self) -> list[str]:
        return [*super().adapter_state_keys(), "prob_mean", "prob_mean_valid"]

    def _extra_state(self) -> dict[str, int]:
        return {
            "reliable": getattr(self, "selected_reliable", 0),
            "total": getattr(self, "selected_total", 0),
        }

    def _load_extra_state(self, state: dict[str, int]) -> None:
        self.selected_reliable, self.selected_total = state["reliable"], state["total"]


register_method(EATAConfig, EATAAdapter)
