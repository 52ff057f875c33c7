"""edgeadapt: keep a vision model accurate after it ships, inside a memory budget.

`import edgeadapt` stays light: torch and everything heavier load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ below.
_LAZY = {
    "wrap": "edgeadapt.api",
    "unwrap": "edgeadapt.api",
    "list_methods": "edgeadapt.api",
    "config_for": "edgeadapt.api",
    "prepare_adapter": "edgeadapt.api",
    "create_model": "edgeadapt.models",
    "list_models": "edgeadapt.models",
    "SourceConfig": "edgeadapt.config",
    "NormConfig": "edgeadapt.config",
    "RoTTAConfig": "edgeadapt.config",
    "SARConfig": "edgeadapt.config",
    "TentConfig": "edgeadapt.config",
    "EATAConfig": "edgeadapt.config",
    "CoTTAConfig": "edgeadapt.config",
    "EcoTTAConfig": "edgeadapt.config",
    "measure_step_memory": "edgeadapt.memory",
    "analytic_step_memory": "edgeadapt.memory",
}

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from edgeadapt.api import config_for, list_methods, prepare_adapter, unwrap, wrap  # noqa: F401
    from edgeadapt.config import (  # noqa: F401
        CoTTAConfig,
        EATAConfig,
        EcoTTAConfig,
        NormConfig,
        RoTTAConfig,
        SARConfig,
        SourceConfig,
        TentConfig,
    )
    from edgeadapt.memory import analytic_step_memory, measure_step_memory  # noqa: F401
    from edgeadapt.models import create_model, list_models  # noqa: F401


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'edgeadapt' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
