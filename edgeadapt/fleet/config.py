"""The fleet's settings, checked before anything loads, and its errors."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeadapt.errors import ConfigError, EdgeAdaptError

__all__ = [
    "MERGES",
    "STRATEGIES",
    "STREAM_STATISTICS",
    "FleetConfig",
    "FleetConnectionError",
    "FleetError",
]

# The aggregation strategies (edgeadapt.fleet.strategies) and device-side merges by name.
STRATEGIES = ("fedavg", "median", "trimmed_mean")
MERGES = ("replace", "interpolate")
# What the frozen BNs' stream statistics do in a fleet (edgeadapt.fleet.statistics_bank).
STREAM_STATISTICS = ("local", "matched")


class FleetError(EdgeAdaptError, RuntimeError):
    """A fleet round could not complete (a device failed, or none answered)."""


class FleetConnectionError(EdgeAdaptError, ConnectionError):
    """The fleet server could not be reached (or no devices joined it) within the timeout."""


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    """How a fleet of devices adapts together: N devices, each adapting on its own stream;
    every `steps_per_round` steps their shared adapter state is aggregated and merged back."""

    devices: int = 4  # N: simulated (or expected real) devices
    rounds: int = 3  # aggregation rounds
    steps_per_round: int = 2  # R: adaptation steps (batches) each device takes per round
    strategy: str = "fedavg"  # how the server aggregates: one of STRATEGIES
    trim: float = 0.2  # trimmed_mean: share of devices dropped at each end, per coordinate
    merge: str = "replace"  # how a device takes the aggregate: one of MERGES
    # interpolate: the device keeps (1 - merge_factor) of its own state and takes merge_factor
    # of the aggregate (1.0 is replace).
    merge_factor: float = 0.5
    # Share the meta networks' BN running statistics too (True), or only their weights
    # (False: FedBN-style, each device keeps statistics of its own stream).
    share_statistics: bool = True
    # The stream statistics the BNs normalise with: "local" (they never leave the device) or
    # "matched" (a device whose input changed gets the statistics other devices had on input
    # like its new one, from the server's bank; statistics_bank.py).
    stream_statistics: str = "local"
    # "matched": the signature distance below which two rounds' inputs count as the same.
    # 0.12: on CIFAR-10-C rounds of 32 frames, 86% of a device's rounds in one corruption are
    # closer than that to the last, 10% of its first rounds in a new one are
    # (benchmarks/fleet/signature_probe.md; chosen there, before the fleet benchmark ran).
    match_threshold: float = 0.12
    seed: int = 0  # the devices' streams and adapters

    def __post_init__(self) -> None:
        for name in ("devices", "rounds", "steps_per_round"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{name} ({flag}) must be an int >= 1, got {value!r}")
        check_strategy(self.strategy)
        if self.merge not in MERGES:
            from edgeadapt._suggest import unknown_name_message

            raise ConfigError(unknown_name_message("merge", self.merge, MERGES))
        if self.stream_statistics not in STREAM_STATISTICS:
            from edgeadapt._suggest import unknown_name_message

            raise ConfigError(
                unknown_name_message("stream_statistics", self.stream_statistics, STREAM_STATISTICS)
            )
        if not (math.isfinite(self.match_threshold) and self.match_threshold > 0):
            raise ConfigError(f"match_threshold must be > 0, got {self.match_threshold!r}")
        if not (math.isfinite(self.merge_factor) and 0 < self.merge_factor <= 1):
            raise ConfigError(f"merge_factor must be in (0, 1], got {self.merge_factor!r}")
        if not (math.isfinite(self.trim) and 0 <= self.trim < 0.5):
            raise ConfigError(
                f"trim must be in [0, 0.5) (the share dropped at each end), got {self.trim!r}"
            )


def check_strategy(name: str) -> str:
    """`name` if it is a strategy, else ConfigError with 'did you mean'."""
    if name not in STRATEGIES:
        from edgeadapt._suggest import unknown_name_message

        raise ConfigError(unknown_name_message("strategy", name, STRATEGIES))
    return name
