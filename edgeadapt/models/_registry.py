"""The backbone registry: a plain dict from name to factory, filled by `register_model` calls.

A leaf module on purpose (no torch import, no model code) so model files and the checkpoint
loader can both import it without cycles.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeadapt._suggest import unknown_name_message
from edgeadapt.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["ModelEntry", "get_model_entry", "list_models", "register_model"]

ModelFactory = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered backbone."""

    name: str  # the name `create_model` takes
    factory: ModelFactory  # called as factory(num_classes=...) -> nn.Module
    description: str  # one line for `edgeadapt models` listings


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, factory: ModelFactory, *, description: str) -> ModelEntry:
    """Add `factory` under `name`; a name can be registered once."""
    if not name or not isinstance(name, str):
        raise ConfigError(f"a model name must be a non-empty string, got {name!r}")
    if name in _MODELS:
        # Silently replacing a backbone would make a checkpoint load into a different network.
        raise ConfigError(f"model {name!r} is already registered; pick another name")
    if not callable(factory):
        raise ConfigError(f"the factory for model {name!r} must be callable, got {factory!r}")
    entry = ModelEntry(name=name, factory=factory, description=description)
    _MODELS[name] = entry
    return entry


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the fnmatch `pattern` (e.g. ``"resnet*"``), sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatchcase(name, pattern))


def get_model_entry(name: str) -> ModelEntry:
    """The entry for `name`; `UnknownNameError` with close matches when it is not registered."""
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        pass
    raise UnknownNameError(
        unknown_name_message("model", name, list_models(), "(see edgeadapt.models.list_models())")
    )
