"""Load backbone weights from the checkpoint formats in ``shared/models``.

Two layouts occur:
- akamaster's legacy dict ``{'best_prec1': float, 'state_dict': {...}}`` saved from
  ``nn.DataParallel``, so every key starts with ``module.``; it predates BatchNorm's
  ``num_batches_tracked`` buffer, so those keys are absent;
- a plain ``state_dict`` (our fine-tuned checkpoint).

Loading never unpickles arbitrary objects (``weights_only=True``), and a checkpoint that does
not fit the model is refused whole, with a message naming the differing keys, rather than
partially applied.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from edgeadapt.errors import CheckpointMismatchError
from edgeadapt.models._registry import list_models

__all__ = ["describe_cifar_resnet", "load_checkpoint", "read_state_dict"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)

_DATA_PARALLEL_PREFIX = "module."
# Buffers a legacy checkpoint may lack without changing what the model computes: BatchNorm
# only reads num_batches_tracked when momentum is None (cumulative averaging).
_OPTIONAL_SUFFIX = "num_batches_tracked"
_SHOWN = 5  # keys quoted per kind of difference; the counts say how many more


def load_checkpoint(model: ModuleT, path: str | os.PathLike[str]) -> ModuleT:
    """Copy the weights in `path` into `model` (in place) and return `model`.

    Raises:
        FileNotFoundError: nothing at `path`.
        CheckpointMismatchError: the file is not a readable checkpoint, or its keys or shapes
            do not fit `model` (the message lists the differences and, for CIFAR ResNets,
            which registered model the checkpoint looks like).
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            _mismatch_message(Path(path), model, state, missing, unexpected, mismatched)
        )
    # Keep the model's own value for buffers the checkpoint predates, then load strictly.
    filled = {k: state.get(k, v) for k, v in expected.items()}
    model.load_state_dict(filled, strict=True)
    return model


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors in a checkpoint file, keys without a ``module.`` prefix, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "no checkpoint file at", str(path))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # permissions and the like: the file exists but the system refused it
    except Exception as exc:  # torch raises a different type for each way a file is bad
        raise CheckpointMismatchError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)}). "
            "Expected a file written by torch.save(model.state_dict(), path); a whole pickled "
            "model is refused because loading it would run arbitrary code."
        ) from exc

    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else loaded
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointMismatchError(
            f"{path} holds a {type(loaded).__name__}, not a state_dict (a dict of name -> "
            "tensor, optionally under a 'state_dict' key)"
        )
    if state and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(_DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return dict(state)


def describe_cifar_resnet(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which CIFAR ResNet a state_dict is for, e.g. ``"'resnet32' (num_classes=10)"``.

    Read from the structure (blocks in ``layer1``, stage widths, ``linear`` rows); None when
    the keys are not those of a `CifarResNet`.
    """
    if "conv1.weight" not in state or "linear.weight" not in state:
        return None
    blocks: dict[int, set[int]] = {}
    for key in state:
        match = re.match(r"layer(\d+)\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks or set(blocks) != set(range(1, len(blocks) + 1)):
        return None
    counts = tuple(len(blocks[i]) for i in sorted(blocks))
    try:
        widths = tuple(int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in sorted(blocks))
    except KeyError:
        return None
    num_classes = int(state["linear.weight"].shape[0])
    n = counts[0]
    if widths == (16, 32, 64) and counts == (n, n, n):
        name = f"resnet{6 * n + 2}"
    elif widths == (4, 8, 16) and counts == (1, 1, 1):
        name = "tiny_resnet"
    else:
        name = None
    if name is not None and name in list_models():
        return f"{name!r} (num_classes={num_classes})"
    return (
        f"an unregistered CifarResNet({list(counts)}, widths={list(widths)}, "
        f"num_classes={num_classes})"
    )


def _mismatch_message(
    path: Path,
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
) -> str:
    parts = [f"checkpoint {path} does not fit this {type(model).__name__}:"]
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape-mismatched (checkpoint vs model)", mismatched),
    ):
        if keys:
            more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
            parts.append(f"{len(keys)} {label} keys ({', '.join(keys[:_SHOWN])}{more});")
    ckpt_arch = describe_cifar_resnet(state)
    if ckpt_arch is not None:
        model_arch = describe_cifar_resnet(model.state_dict())
        parts.append(f"the checkpoint looks like {ckpt_arch}")
        parts.append(f"but the model is {model_arch}." if model_arch else "but the model is not.")
    parts.append(
        "Build the model the checkpoint was made for, or load a checkpoint made for this one."
    )
    return " ".join(parts)


def _first_line(exc: BaseException, limit: int = 100) -> str:
    # torch's messages run to paragraphs; the start names the problem, ours says what to do.
    text = str(exc).strip()
    line = text.splitlines()[0] if text else "no details"
    return line if len(line) <= limit else line[: limit - 3] + "..."
