"""Fleet results, and the baseline of devices that never share (isolated adaptation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgeadapt.fleet.device import DeviceFactory

__all__ = ["DeviceRound", "FleetResult", "rounds_table", "run_isolated"]


@dataclass
class DeviceRound:
    """One device in one round."""

    device: int
    round: int  # from 1
    steps: int
    samples: int
    errors: int | None  # None where the stream has no labels
    bytes_sent: int = 0  # server -> device: the aggregate (0 in round 1, nothing to merge yet)
    bytes_received: int = 0  # device -> server: its shared adapter state


@dataclass
class FleetResult:
    """Every device in every round of one run ("fleet-fedavg", "isolated", "source", ...)."""

    mode: str
    rounds: list[list[DeviceRound]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def round_errors(self) -> list[float | None]:
        """Online error (%) of the whole fleet in each round: wrong / seen over every device."""
        out: list[float | None] = []
        for devices in self.rounds:
            seen = sum(d.samples for d in devices if d.errors is not None)
            wrong = sum(d.errors for d in devices if d.errors is not None)
            out.append(100 * wrong / seen if seen else None)
        return out

    def mean_error(self) -> float | None:
        seen = sum(d.samples for r in self.rounds for d in r if d.errors is not None)
        wrong = sum(d.errors for r in self.rounds for d in r if d.errors is not None)
        return 100 * wrong / seen if seen else None

    def bytes_per_device(self) -> list[dict[str, float]]:
        """Mean bytes sent to and received from a device in each round."""
        return [
            {
                "sent": sum(d.bytes_sent for d in r) / max(len(r), 1),
                "received": sum(d.bytes_received for d in r) / max(len(r), 1),
            }
            for r in self.rounds
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "settings": self.settings,
            "mean_error": self.mean_error(),
            "round_errors": self.round_errors(),
            "bytes_per_device": self.bytes_per_device(),
            "rounds": [[asdict(d) for d in r] for r in self.rounds],
        }


def run_isolated(
    factory: DeviceFactory,
    devices: int,
    rounds: int,
    steps_per_round: int,
    *,
    mode: str = "isolated",
    progress: bool = True,
) -> FleetResult:
    """Every device adapts on its own stream and never shares: the baseline a fleet must beat.
    One device at a time (each is independent), so memory holds one adapter."""
    from tqdm.auto import tqdm

    per_round: list[list[DeviceRound]] = [[] for _ in range(rounds)]
    with tqdm(total=devices * rounds, desc=f"{mode} (device-rounds)", disable=not progress) as bar:
        for i in range(devices):
            device = factory(i)
            for r in range(rounds):
                s = device.adapt(steps_per_round)
                per_round[r].append(DeviceRound(i, r + 1, s.steps, s.samples, s.errors))
                bar.update(1)
    return FleetResult(mode, per_round)


def rounds_table(results: list[FleetResult]) -> str:
    """Markdown: online error (%) per round for each run, and bytes per device per round."""
    n = max(len(r.rounds) for r in results)
    head = "| round | " + " | ".join(r.mode for r in results) + " | bytes to / from a device |"
    lines = [head, "|" + "---|" * (len(results) + 2)]
    traffic = next((r for r in results if r.mode.startswith("fleet")), None)
    for k in range(n):
        cells = []
        for r in results:
            e = r.round_errors()[k] if k < len(r.rounds) else None
            cells.append("—" if e is None else f"{e:.1f}")
        b = traffic.bytes_per_device()[k] if traffic and k < len(traffic.rounds) else None
        io_cell = f"{b['sent']:.0f} / {b['received']:.0f}" if b else "—"
        lines.append(f"| {k + 1} | " + " | ".join(cells) + f" | {io_cell} |")
    means = ["—" if r.mean_error() is None else f"**{r.mean_error():.1f}**" for r in results]
    lines.append("| mean | " + " | ".join(means) + " | |")
    return "\n".join(lines)
