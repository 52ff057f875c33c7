"""Fleet results, and the baseline of devices that never share (isolated adaptation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgeadapt.fleet.device import DeviceFactory

__all__ = ["DeviceRound", "FleetResult", "devices_table", "rounds_table", "run_isolated"]


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

    def device_errors(self) -> dict[int, float | None]:
        """Online error (%) of each device over the whole run, by device id."""
        seen: dict[int, int] = {}
        wrong: dict[int, int] = {}
        unlabelled: set[int] = set()
        for r in self.rounds:
            for d in r:
                seen[d.device] = seen.get(d.device, 0) + d.samples
                if d.errors is None:
                    unlabelled.add(d.device)
                else:
                    wrong[d.device] = wrong.get(d.device, 0) + d.errors
        return {
            k: None if k in unlabelled or not seen[k] else 100 * wrong.get(k, 0) / seen[k]
            for k in sorted(seen)
        }

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
            "device_errors": {str(k): v for k, v in self.device_errors().items()},
            "bytes_per_device": self.bytes_per_device(),
            "rounds": [[asdict(d) for d in r] for r in self.rounds],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetResult:
        """A result as `to_dict` wrote it (the derived fields are recomputed, not read)."""
        rounds = [[DeviceRound(**d) for d in r] for r in data["rounds"]]
        return cls(data["mode"], rounds, dict(data.get("settings", {})))


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


def devices_table(results: list[FleetResult], baseline: str = "isolated") -> str:
    """Markdown: each device's online error over the run in every result, each fleet run's
    difference from `baseline` per device, and per fleet run the worst device's difference
    and how many devices did better than alone. "" when no result is `baseline`."""
    base = next((r for r in results if r.mode == baseline), None)
    if base is None:
        return ""
    errors = {r.mode: r.device_errors() for r in results}
    fleets = [r.mode for r in results if r.mode.startswith("fleet")]
    head = ["device"] + [r.mode for r in results] + [f"{f} − {baseline}" for f in fleets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(v: float | None, signed: bool = False) -> str:
        return "—" if v is None else (f"{v:+.2f}" if signed else f"{v:.2f}")

    def diff(f: str, k: int) -> float | None:
        a, b = errors[f].get(k), errors[baseline].get(k)
        return None if a is None or b is None else a - b

    for k in errors[baseline]:
        row = [str(k)] + [cell(errors[r.mode].get(k)) for r in results]
        row += [cell(diff(f, k), signed=True) for f in fleets]
        lines.append("| " + " | ".join(row) + " |")
    for f in fleets:
        diffs = [(d, k) for k in errors[baseline] if (d := diff(f, k)) is not None]
        if diffs:
            worst, who = max(diffs)
            better = sum(d < 0 for d, _ in diffs)
            lines.append(
                f"\n{f}: worst device {who} at {worst:+.2f} points against {baseline}; "
                f"{better} of {len(diffs)} devices better than {baseline}."
            )
    return "\n".join(lines)
