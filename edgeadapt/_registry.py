"""The method registry: one plain dict, filled by one `register_method` call per method."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeadapt.config import AdaptConfig
    from edgeadapt.methods.base import Adapter

__all__ = ["METHODS", "register_method"]

# method name -> (config type, adapter type)
METHODS: dict[str, tuple[type[AdaptConfig], type[Adapter]]] = {}


def register_method(config_type: type[AdaptConfig], adapter_type: type[Adapter]) -> type[Adapter]:
    name = config_type().method
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    adapter_type.config_type = config_type
    METHODS[name] = (config_type, adapter_type)
    return adapter_type
