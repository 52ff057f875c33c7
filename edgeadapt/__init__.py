"""edgeadapt: keep a vision model accurate after it ships, inside a memory budget.

`import edgeadapt` stays light: torch and everything heavier load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The version when no installed metadata says otherwise (a plain checkout on sys.path).
_FALLBACK_VERSION = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ below.
_LAZY = {
    "wrap": "edgeadapt.api",
    "unwrap": "edgeadapt.api",
    "list_methods": "edgeadapt.api",
    "config_for": "edgeadapt.api",
    "prepare_adapter": "edgeadapt.api",
    "load_adapter": "edgeadapt.api",
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
    from edgeadapt.api import (  # noqa: F401
        config_for,
        list_methods,
        load_adapter,
        prepare_adapter,
        unwrap,
        wrap,
    )
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


def _installed_version() -> str:
    # Looked up on first use: reading distribution metadata costs more than the import.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeadapt")
    except PackageNotFoundError:
        return _FALLBACK_VERSION


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _installed_version()
        return value
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'edgeadapt' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
