"""Fleets of devices on corrupted image streams: each device its own corruption order and its
own label order, all starting from one (warmed-up) adapter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgeadapt.config import AdaptConfig, SourceConfig
from edgeadapt.errors import ConfigError
from edgeadapt.fleet.device import DomainStream, FleetDevice

__all__ = ["CorruptionFleet"]


def _to_batch(images: np.ndarray) -> Tensor:
    from edgeadapt.data import to_tensor

    return to_tensor(images, normalize=True)


@dataclass(frozen=True)
class CorruptionFleet:
    """A `DeviceFactory`: device i wraps `model` with `config`, loads `warm_state` (the adapter
    state after a warm-up, the same for every device) and walks its own stream: the
    `corruptions` in an order of its own, each domain `images_per_domain` images of `source`
    (a `DomainSource`) drawn for that device, in a class-correlated order (`delta`, the
    Dirichlet concentration of NOTE/RoTTA, drawn per device and domain; None: i.i.d.)."""

    model: nn.Module
    config: AdaptConfig
    source: Any  # DomainSource: .get(corruption, severity) -> (uint8 images, labels)
    labels: np.ndarray  # the labels of the source's images, in its order
    corruptions: tuple[str, ...]
    images_per_domain: int
    batch_size: int = 64
    severity: int = 5
    delta: float | None = 0.1
    seed: int = 0
    warm_state: dict[str, Tensor] | None = None
    input_shape: tuple[int, int, int] = (3, 32, 32)

    def __post_init__(self) -> None:
        if not self.corruptions:
            raise ConfigError("a fleet stream needs at least one corruption")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not 1 <= self.images_per_domain <= len(self.labels):
            raise ConfigError(
                f"images per domain must be 1..{len(self.labels)} (the source's images), got "
                f"{self.images_per_domain}"
            )
        if self.images_per_domain < self.batch_size:
            raise ConfigError(
                f"images per domain ({self.images_per_domain}) must be at least one batch "
                f"({self.batch_size})"
            )

    @property
    def batches_per_device(self) -> int:
        return (self.images_per_domain // self.batch_size) * len(self.corruptions)

    def stream_plan(self, device_id: int) -> tuple[list[str], list[np.ndarray]]:
        """Device `device_id`'s corruption order and each domain's image indices, in order."""
        from edgeadapt.data import correlated_order

        rng = np.random.default_rng((self.seed, device_id))
        order = [self.corruptions[i] for i in rng.permutation(len(self.corruptions))]
        base = rng.permutation(len(self.labels))[: self.images_per_domain]
        if self.delta is None:
            return order, [base] * len(order)
        draws = [
            base[correlated_order(self.labels[base], self.delta, (self.seed, device_id, k))]
            for k in range(len(order))
        ]
        return order, draws

    def __call__(self, device_id: int) -> FleetDevice:
        from edgeadapt.api import wrap

        example = torch.zeros(2, *self.input_shape)
        adapter = wrap(self.model, self.config, example_input=example)
        if self.warm_state is not None:
            adapter.load_adapter_state_dict(self.warm_state)
            adapter.snapshot()
        corruptions, orders = self.stream_plan(device_id)
        stream = DomainStream(
            self.source, corruptions, orders, batch_size=self.batch_size,
            severity=self.severity, to_batch=_to_batch,
        )  # fmt: skip
        return FleetDevice(adapter, stream, device_id=device_id)

    def source_only(self) -> CorruptionFleet:
        """The same devices and streams with the frozen source model: the floor to beat."""
        return dataclasses.replace(self, config=SourceConfig(), warm_state=None)

    def describe(self) -> dict[str, Any]:
        return {
            "corruptions": list(self.corruptions),
            "images_per_domain": self.images_per_domain,
            "batch_size": self.batch_size,
            "severity": self.severity,
            "stream": "iid" if self.delta is None else {"order": "correlated", "delta": self.delta},
            "batches_per_device": self.batches_per_device,
            "seed": self.seed,
        }
