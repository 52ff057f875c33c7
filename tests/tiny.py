"""Helpers for the core tests: a config per method that suits tiny random models."""

from __future__ import annotations

from edgeadapt.api import config_for, list_methods

# Settings that make every method take a real step on a tiny random model.
TEST_OVERRIDES = {
    "tent": {"lr": 1e-2},
    "eata": {"lr": 1e-2, "entropy_margin": 10.0, "redundancy_margin": 2.0},
    "cotta": {"lr": 1e-2, "augmentations": 2, "confidence_threshold": 1.0, "restore_prob": 0.1},
    "ecotta": {"lr": 1e-2, "entropy_margin": 10.0},
    "rotta": {"update_every": 8},
    "sar": {"lr": 1e-2, "entropy_margin": 10.0},
}

METHODS = list_methods()
ADAPTING = [m for m in METHODS if m not in ("source", "norm")]


def tiny_config(method: str, **extra):
    return config_for(method, **{**TEST_OVERRIDES.get(method, {}), **extra})
