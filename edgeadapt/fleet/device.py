"""One device of a fleet: an adapter on its own stream, which it walks batch by batch."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from edgeadapt.errors import ConfigError

__all__ = ["DeviceFactory", "DeviceStream", "DomainStream", "FleetDevice", "RoundStats"]


class DeviceStream(Protocol):
    """A device's input, batch by batch, with random access so a device can resume anywhere."""

    def __len__(self) -> int:  # batches
        ...

    def batch(self, i: int) -> tuple[Tensor, Tensor | None]:
        """Batch `i`: normalised images, and labels where known (None on a real device)."""
        ...


class DeviceFactory(Protocol):
    """Builds device `i` of a fleet, the same every time (a simulation may rebuild one)."""

    def __call__(self, device_id: int) -> FleetDevice: ...


class DomainStream:
    """A continual stream of domains: domain k is the corruption `corruptions[k]` of a source's
    images, taken in `orders[k]`, cut into batches of `batch_size` (a remainder is dropped so
    every domain has the same number of batches)."""

    def __init__(
        self,
        source,
        corruptions: Sequence[str],
        orders: Sequence[np.ndarray],
        *,
        batch_size: int,
        severity: int,
        to_batch: Callable[[np.ndarray], Tensor],
    ) -> None:
        if len(corruptions) != len(orders) or not corruptions:
            raise ConfigError("a stream needs one index order per corruption, and one at least")
        self.per_domain = min(len(o) for o in orders) // batch_size
        if self.per_domain < 1:
            raise ConfigError(
                f"each domain needs at least one batch of {batch_size} images; the smallest has "
                f"{min(len(o) for o in orders)}: pass more images per domain or a smaller batch"
            )
        self.source, self.corruptions, self.orders = source, list(corruptions), list(orders)
        self.batch_size, self.severity, self.to_batch = batch_size, severity, to_batch

    def __len__(self) -> int:
        return self.per_domain * len(self.corruptions)

    def domain(self, i: int) -> str:
        return self.corruptions[i // self.per_domain]

    def batch(self, i: int) -> tuple[Tensor, Tensor | None]:
        k, j = divmod(i, self.per_domain)
        images, labels = self.source.get(self.corruptions[k], self.severity)
        chosen = self.orders[k][j * self.batch_size : (j + 1) * self.batch_size]
        # Read in file order (fast on a memory map), then put back in stream order.
        in_file_order = np.sort(chosen)
        back = np.searchsorted(in_file_order, chosen)
        x = self.to_batch(np.asarray(images[in_file_order])[back])
        y = np.asarray(labels[in_file_order])[back].astype(np.int64)
        return x, torch.from_numpy(y)


@dataclass
class RoundStats:
    """What a device did in one round."""

    steps: int  # batches adapted on (fewer than asked once its stream has ended)
    samples: int  # images adapted on: FedAvg's weight
    errors: int | None  # wrong online predictions, where the stream has labels


class FleetDevice:
    """An adapter (`edgeadapt.wrap(...)`) and its stream; `adapt(steps)` walks the next
    `steps` batches, predicting and adapting on each, as the adapter's forward does."""

    def __init__(self, adapter: nn.Module, stream: DeviceStream, *, device_id: int = 0) -> None:
        self.adapter, self.stream, self.device_id = adapter, stream, device_id
        self.position = 0  # the next batch of the stream
        # The input signature of the last round (statistics matching, statistics_bank.py).
        self.last_signature: Tensor | None = None

    def adapt(self, steps: int) -> RoundStats:
        done, samples, errors, labelled = 0, 0, 0, True
        while done < steps and self.position < len(self.stream):
            x, y = self.stream.batch(self.position)
            logits = self.adapter(x)
            samples += x.shape[0]
            if y is None:
                labelled = False
            else:
                errors += int((logits.argmax(1) != y).sum())
            self.position += 1
            done += 1
        return RoundStats(done, samples, errors if labelled else None)

    def state_bytes(self) -> bytes:
        """Everything adaptation built and where the stream is: `load_state_bytes` on a device
        the factory built afresh continues exactly here."""
        buf = io.BytesIO()
        torch.save({"position": self.position, "adapter": self.adapter.resume_state(),
                    "last_signature": self.last_signature}, buf)  # fmt: skip
        return buf.getvalue()

    def load_state_bytes(self, data: bytes) -> None:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        self.adapter.load_resume_state(saved["adapter"])
        self.position = int(saved["position"])
        self.last_signature = saved.get("last_signature")
