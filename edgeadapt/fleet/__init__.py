"""Fleet adaptation: many devices, each adapting on its own stream, sharing adapter state.

Every device runs its own adapter (EcoTTA by default) on its own stream; every R steps the
fleet aggregates the adapter state only (`payload`: meta-network weights and their BN
statistics, never inputs, never the frozen backbone) with a strategy (`strategies`: FedAvg
weighted by samples adapted, a coordinate-wise median, a trimmed mean), and each device
merges the aggregate back (replace, or interpolate by a factor). With
`FleetConfig(stream_statistics="matched")` the frozen BNs' stream statistics also travel, as
a server-side bank matched by a signature of each device's input (`statistics_bank`): a
device whose input changed gets the statistics devices had on input like its new one, rather
than waiting hundreds of frames for its own to follow. Flower (`flwr`, the `fleet`
extra) carries the rounds, in its simulation engine (`simulate`) or over the network
(`serve`, `connect`); `run_isolated` is the baseline of devices that never share.

The Flower glue imports lazily: `import edgeadapt.fleet` needs no Flower.
"""

from __future__ import annotations

from typing import Any

from edgeadapt.fleet.config import (
    MERGES,
    STRATEGIES,
    FleetConfig,
    FleetConnectionError,
    FleetError,
)
from edgeadapt.fleet.device import DeviceFactory, DomainStream, FleetDevice, RoundStats
from edgeadapt.fleet.payload import merge_shared_state, shared_state, shared_state_keys
from edgeadapt.fleet.runner import (
    DeviceRound,
    FleetResult,
    devices_table,
    rounds_table,
    run_isolated,
)
from edgeadapt.fleet.strategies import aggregate
from edgeadapt.fleet.streams import CorruptionFleet

__all__ = [
    "MERGES",
    "STRATEGIES",
    "CorruptionFleet",
    "DeviceFactory",
    "DeviceRound",
    "DomainStream",
    "FleetConfig",
    "FleetConnectionError",
    "FleetDevice",
    "FleetError",
    "FleetResult",
    "RoundStats",
    "aggregate",
    "connect",
    "devices_table",
    "merge_shared_state",
    "rounds_table",
    "run_isolated",
    "serve",
    "shared_state",
    "shared_state_keys",
    "simulate",
]

_FLOWER = ("connect", "serve", "simulate")


def __getattr__(name: str) -> Any:
    if name in _FLOWER:  # Flower's glue, imported when first used
        from edgeadapt.fleet import flower

        return getattr(flower, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
