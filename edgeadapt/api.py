"""The entry points: `wrap`, `unwrap`, `list_methods`, `config_for`, `load_adapter`, and
`prepare_adapter` (a method's setup on source data: EcoTTA's warm-up, EATA's Fisher)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from edgeadapt._registry import METHODS
from edgeadapt._suggest import unknown_name_message
from edgeadapt.config import AdaptConfig, config_from_dict
from edgeadapt.errors import (
    CheckpointMismatchError,
    ConfigError,
    PartitionError,
    UnknownNameError,
)
from edgeadapt.setup_data import SourceData, SourceDataError, prepare_adapter

__all__ = [
    "SourceData",
    "SourceDataError",
    "config_for",
    "list_methods",
    "load_adapter",
    "prepare_adapter",
    "unwrap",
    "wrap",
]


def _registry() -> dict:
    import edgeadapt.methods  # noqa: F401  (fills the registry)

    return METHODS


def list_methods() -> list[str]:
    """Names of the registered methods."""
    return sorted(_registry())


def config_for(method: str, **fields: Any) -> AdaptConfig:
    """The config of a method by name, e.g. `config_for("tent", lr=1e-4)`."""
    registry = _registry()
    if method not in registry:
        raise UnknownNameError(unknown_name_message("method", method, sorted(registry)))
    try:
        return registry[method][0](**fields)
    except TypeError as exc:
        raise ConfigError(f"bad settings for {method!r}: {exc}") from exc


def wrap(model: nn.Module, config: AdaptConfig, *, example_input: Tensor | None = None):
    """An adapter around a copy of `model`; the type of `config` picks the method.

    `model` itself is never modified. `example_input` (a small batch shaped like the real
    input) is used for a probe forward; by default a random (2, C, 64, 64) batch.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"wrap needs an nn.Module, got {type(model).__name__}")
    if not isinstance(config, AdaptConfig):
        raise ConfigError(
            f"wrap needs a method config (e.g. edgeadapt.TentConfig()), got {type(config).__name__}"
        )
    registry = _registry()
    entry = registry.get(config.method)
    if entry is None or type(config) is not entry[0]:
        raise ConfigError(
            f"no method is registered for {type(config).__name__}; available: {sorted(registry)}"
        )
    return entry[1](model, config, example_input=example_input)


def unwrap(adapter) -> nn.Module:
    """The original model an adapter was made from, unchanged."""
    return adapter.unwrap()


def load_adapter(
    model: nn.Module,
    path: str | Path,
    *,
    example_input: Tensor | None = None,
    strict_weights: bool = True,
):
    """An adapter around a copy of `model`, with the method, config and adapter weights saved
    in `path` (by `adapter.save(path)`); `model` itself is not modified.

    The file is read with `torch.load(weights_only=True)`, so an untrusted file cannot run
    code. Raises `AdapterNotFoundError` (a FileNotFoundError) when there is no file,
    `CheckpointMismatchError` when the file is not an adapter or was saved for another
    architecture, frozen weights (unless `strict_weights=False`) or partition of the model.
    """
    from edgeadapt.methods.base import read_adapter_file

    if isinstance(model, (str, Path)) and isinstance(path, nn.Module):
        raise ConfigError("load_adapter takes the model first: load_adapter(model, path)")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"load_adapter needs an nn.Module, got {type(model).__name__}")
    payload = read_adapter_file(path)
    config = config_from_dict(json.loads(payload["config"]))
    try:
        adapter = wrap(model, config, example_input=example_input)
    except PartitionError as exc:  # the saved parts name modules this model lacks
        raise CheckpointMismatchError(f"{path} was saved for another model: {exc}") from exc
    adapter.load(path, strict_weights=strict_weights)
    return adapter
