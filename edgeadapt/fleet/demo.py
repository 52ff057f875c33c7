"""The embedded fleet: scikit-learn's digits, no download, no ../shared.

A small ResNet trained on the clean digits (as `edgeadapt demo` does) is the source model;
EcoTTA is warmed up once on the clean digits, and every device starts from that adapter.
Each device then sees the held-out digits under the demo's corruptions, in an order of its
own and with a class-correlated label order of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edgeadapt.fleet.streams import CorruptionFleet

__all__ = ["demo_fleet"]


def demo_fleet(
    *,
    images_per_domain: int = 64,
    batch_size: int = 16,
    severity: int = 3,
    delta: float | None = 0.1,
    train_epochs: int = 15,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CorruptionFleet:
    """Train the digits model, warm EcoTTA up, and return the fleet's `DeviceFactory`."""
    from edgeadapt._extras import require
    from edgeadapt.api import wrap
    from edgeadapt.bench.cifar import with_input_statistics
    from edgeadapt.bench.demo import DEMO_CORRUPTIONS, train_source_model
    from edgeadapt.bench.sources import GeneratedSource
    from edgeadapt.config import EcoTTAConfig
    from edgeadapt.data import to_tensor
    from edgeadapt.setup_data import SourceData, prepare_adapter
    from edgeadapt.source_training import digits_dataset

    require("sklearn", "the fleet's embedded demo (scikit-learn's digits)")
    train_x, train_y, test_x, test_y = digits_dataset(seed)
    log(f"training a small ResNet on {len(train_y)} clean digits (32×32)...")
    model = train_source_model(train_x, train_y, epochs=train_epochs, seed=seed, progress=progress)
    config = EcoTTAConfig(**with_input_statistics(None)["ecotta"])
    adapter = wrap(model, config, example_input=torch.zeros(2, 3, 32, 32))
    warm = SourceData.from_batches(
        [
            (to_tensor(train_x[i : i + 64], normalize=True), torch.from_numpy(train_y[i : i + 64]))
            for i in range(0, len(train_y), 64)
        ],
        "the clean training digits",
    )
    prepare_adapter(adapter, warm, warmup_steps=3 * len(warm.batches), warmup_lr=3e-3,
                    progress=progress)  # fmt: skip
    return CorruptionFleet(
        model=model, config=config, source=GeneratedSource(test_x, test_y, seed=seed),
        labels=test_y, corruptions=tuple(DEMO_CORRUPTIONS),
        images_per_domain=min(images_per_domain, len(test_y)), batch_size=batch_size,
        severity=severity, delta=delta, seed=seed, warm_state=adapter.adapter_state_dict(),
    )  # fmt: skip
