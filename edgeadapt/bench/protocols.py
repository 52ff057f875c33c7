"""Evaluation protocols of continual test-time adaptation (Wang et al. 2022, CoTTA; the
catalogue of mariodoebler/test-time-adaptation): the order in which domains arrive and when
the adapter is reset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeadapt.errors import ConfigError

__all__ = ["PROTOCOLS", "Segment", "make_protocol"]


@dataclass(frozen=True)
class Segment:
    """One domain of the stream: every test image once, corrupted so."""

    corruption: str
    severity: int
    round: int = 0  # repetition of the whole sequence (long-term protocol), from 0
    reset_before: bool = False  # reset the adapter before this segment


def continual(corruptions: Sequence[str], severity: int = 5, rounds: int = 1) -> list[Segment]:
    """The domains in order, `rounds` times, never reset (rounds > 1: the long-term protocol)."""
    return [Segment(c, severity, r) for r in range(rounds) for c in corruptions]


def reset_per_domain(
    corruptions: Sequence[str], severity: int = 5, rounds: int = 1
) -> list[Segment]:
    """Each domain from the source model: the adapter is reset before every domain."""
    return [Segment(c, severity, r, reset_before=True) for r in range(rounds) for c in corruptions]


def gradual(corruptions: Sequence[str], severity: int = 5, rounds: int = 1) -> list[Segment]:
    """Severity climbs 1 → `severity` → 1 within each corruption; the type changes at the
    lowest severity, so shifts are gradual."""
    up = list(range(1, severity + 1))
    ramp = up + up[-2::-1]
    return [Segment(c, s, r) for r in range(rounds) for c in corruptions for s in ramp]


PROTOCOLS = {
    "continual": continual,
    "reset": reset_per_domain,
    "long-term": continual,
    "gradual": gradual,
}


# Rounds when none are asked for: the long-term protocol is ten rounds of the sequence.
DEFAULT_ROUNDS = {"long-term": 10}


def make_protocol(
    name: str, corruptions: Sequence[str], *, severity: int = 5, rounds: int | None = None
) -> list[Segment]:
    """The segments of protocol `name`; `rounds` None: the protocol's own (10 for long-term,
    else 1). An explicit number is kept as given."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
    if not corruptions:
        raise ConfigError("a protocol needs at least one corruption")
    if not 1 <= severity <= 5:
        raise ConfigError(f"severity must be 1..5, got {severity}")
    if rounds is None:
        rounds = DEFAULT_ROUNDS.get(name, 1)
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    return PROTOCOLS[name](corruptions, severity, rounds)
