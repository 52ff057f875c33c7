"""What a device shares with the fleet, and how it takes the aggregate back.

The shared state is found structurally, as the adapter's own `adapter_state_keys` are: the
trainable parameters and the buffers of the modules that own them. For EcoTTA that is the
meta networks' weights and their BN running statistics, and nothing of the frozen backbone:
not its weights, and not the stream statistics its frozen BNs keep (those describe the
device's own current input, which another device's stream says nothing about; statistics
matching, `statistics_bank`, exchanges those only between devices whose inputs match). No input
ever leaves the device. Optimizer moments and an EcoTTA teacher stay local too.

Merge (`merge_shared_state`): "replace" loads the aggregate; "interpolate" moves each
floating-point tensor a `factor` of the way to it, local + factor · (aggregate - local), so
a device keeps part of what its own stream taught it. Integer counters are replaced.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor, nn

from edgeadapt.errors import CheckpointMismatchError, ConfigError

__all__ = [
    "layout_digest",
    "merge_shared_state",
    "shared_state",
    "shared_state_keys",
    "state_copies",
    "state_from_arrays",
    "state_to_arrays",
]


def shared_state_keys(adapter: nn.Module, *, statistics: bool = True) -> list[str]:
    """State-dict keys of `adapter` a device shares: trainable parameters, and with
    `statistics` the buffers of the modules that own them, in state-dict order."""
    keys: list[str] = []
    for name, module in adapter.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not any(p.requires_grad for _, p in own):
            continue
        prefix = f"{name}." if name else ""
        keys += [prefix + n for n, p in own if p.requires_grad]
        if statistics:
            keys += [prefix + n for n, b in module.named_buffers(recurse=False) if b is not None]
    if not keys:
        method = getattr(getattr(adapter, "config", None), "method", type(adapter).__name__)
        raise ConfigError(
            f"a {method!r} adapter trains nothing, so a fleet has nothing to share; use a "
            "method with trainable adapter state (ecotta, tent, ...)"
        )
    order = {k: i for i, k in enumerate(adapter.state_dict())}
    return sorted(keys, key=order.__getitem__)


def shared_state(adapter: nn.Module, *, statistics: bool = True) -> dict[str, Tensor]:
    """Copies of the tensors `shared_state_keys` names."""
    return state_copies(adapter, shared_state_keys(adapter, statistics=statistics))


def state_copies(adapter: nn.Module, keys: list[str]) -> dict[str, Tensor]:
    """Detached CPU copies of `adapter`'s state-dict tensors `keys`, in that order."""
    state = adapter.state_dict()
    return {k: state[k].detach().cpu().clone() for k in keys}


@torch.no_grad()
def merge_shared_state(
    adapter: nn.Module,
    aggregate: dict[str, Tensor],
    *,
    merge: str = "replace",
    factor: float = 0.5,
    statistics: bool = True,
) -> None:
    """Take the fleet's `aggregate` into `adapter` (see the module docstring). Refuses,
    changing nothing, an aggregate whose names or shapes are not this adapter's."""
    keys = shared_state_keys(adapter, statistics=statistics)
    own = adapter.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(keys) - set(aggregate)), sorted(set(aggregate) - set(keys))
    shapes = [k for k in keys if k in aggregate and aggregate[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(
            f"the fleet's aggregate does not fit this adapter: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {shapes[:5]}; every device must wrap "
            "the same model with the same config"
        )
    if merge not in ("replace", "interpolate"):
        raise ConfigError(f"merge must be 'replace' or 'interpolate', got {merge!r}")
    for k in keys:
        target, value = own[k], aggregate[k].to(own[k].device, own[k].dtype)
        if merge == "interpolate" and target.is_floating_point():
            target.lerp_(value, factor)
        else:
            target.copy_(value)


def state_to_arrays(state: dict[str, Tensor]) -> list[np.ndarray]:
    """The tensors as numpy arrays in the state's order: what goes on the wire."""
    return [t.detach().cpu().numpy() for t in state.values()]


def state_from_arrays(keys: list[str], arrays: list[np.ndarray]) -> dict[str, Tensor]:
    if len(keys) != len(arrays):
        raise CheckpointMismatchError(
            f"received {len(arrays)} tensors for an adapter that shares {len(keys)}; every "
            "device must wrap the same model with the same config"
        )
    return {k: torch.from_numpy(np.array(a, copy=True)) for k, a in zip(keys, arrays)}


def layout_digest(state: dict[str, Tensor]) -> str:
    """A short digest of the names, shapes and dtypes: equal on devices that can be averaged."""
    h = hashlib.sha256()
    for k, t in state.items():
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()[:16]
