"""Structure-keeping deltaify, and the dense twin of a deltaified model.

`deltaify` returns a `torch.fx.GraphModule` for traceable models, which keeps parameter
names but calls leaf layers from a flat graph: blocks and stages are no longer called as
modules. Adapters that cut a network into parts by module (EcoTTA's meta networks hook each
block's call) cannot wrap that. `deltaify_modules` instead wraps every activation *module*
in place, on a copy, as nn.Sequential(act, DeltaActivation), so the model's own classes,
forward and call structure stay (deltaify's fallback for untraceable models, on purpose).
Limits, as for that fallback: functional activations (F.relu) get no quantiser, a module
called at several sites shares one, and fan-outs come from a probe (first conv / linear run
after the activation), so an activation feeding pooling and a linear gets fan-out 0.

`strip_delta` is the inverse view: a copy with every quantiser replaced by nn.Identity,
the dense model with the same weights (the distillation teacher, the reference in streams).
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from edgeadapt.delta.deltaify import (
    CALIBRATION_QUANTILE,
    DEFAULT_ACTIVATIONS,
    _deltaify_modules,
    check_quantile,
)
from edgeadapt.delta.quantize import DeltaActivation
from edgeadapt.errors import InputError

__all__ = ["deltaify_modules", "strip_delta"]


def deltaify_modules(
    model: nn.Module,
    example_input: Tensor,
    *,
    bits: int = 8,
    activation_types: tuple[type[nn.Module], ...] = DEFAULT_ACTIVATIONS,
    quantile: float = CALIBRATION_QUANTILE,
) -> nn.Module:
    """A copy of `model` with a `DeltaActivation` after every activation module, in place.

    Same calibration as `deltaify` (bits, per-channel `quantile`, default the 99.9th
    percentile); `model` is not modified and the copy keeps its train/eval mode. See the
    module docstring for limits.
    """
    if not isinstance(example_input, Tensor):
        raise InputError(f"example_input must be a Tensor batch, got {type(example_input)}")
    check_quantile(quantile)
    out = _deltaify_modules(copy.deepcopy(model), example_input, bits, activation_types, quantile)
    return out.train(model.training)


def strip_delta(model: nn.Module) -> nn.Module:
    """A copy of `model` with every `DeltaActivation` replaced by nn.Identity (no quantising).

    Works on both kinds of deltaified model (graph modules call the quantiser by its module
    name, which now names an Identity). `model` is not modified.
    """
    work = copy.deepcopy(model)
    names = [n for n, m in work.named_modules() if isinstance(m, DeltaActivation)]
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(work.get_submodule(parent) if parent else work, child, nn.Identity())
    return work
