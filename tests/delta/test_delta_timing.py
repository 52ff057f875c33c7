"""The timing utility runs and reports consistent numbers (no speed assertions: tests stay fast
and machine-independent; measured ratios belong in benchmark results)."""

from __future__ import annotations

import math

import pytest

from edgeadapt.delta import time_delta_layer, time_delta_layers
from edgeadapt.errors import ConfigError


def test_timing_reports_wall_clock_and_mac_ratios() -> None:
    results = time_delta_layers(
        ("linear", "conv1x1", "conv3x3"), (0.0, 0.9), channels=4, size=8, repeats=2
    )
    assert [(r.op, r.sparsity) for r in results] == [
        (op, s) for op in ("linear", "conv1x1", "conv3x3") for s in (0.0, 0.9)
    ]
    for r in results:
        assert r.dense_s > 0 and r.delta_s > 0 and math.isfinite(r.speedup)
        assert r.mac_ratio >= 1.0
    dense_delta = {(r.op, r.sparsity): r.mac_ratio for r in results}
    assert dense_delta[("conv3x3", 0.9)] > dense_delta[("conv3x3", 0.0)]


def test_timing_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        time_delta_layer("conv5x5", 0.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        time_delta_layer("linear", 1.5)
