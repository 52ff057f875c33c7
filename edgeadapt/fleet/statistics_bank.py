"""Stream statistics a fleet can match: the server's bank of them, keyed by an input signature.

On a device adapting frame by frame, the frozen BNs normalise with statistics of about the
last 512–4096 frames (`AdaptConfig.stat_window`). When its input changes (fog comes in, a new
lens), they lag for hundreds of frames, and that lag, not the meta networks, is most of a
short domain's error. Other devices have often been where this one just went; this module
lets the fleet say so. An oracle that hands each device the statistics of the corruption it
enters, the moment it enters it, takes 5 devices at batch 1 with 128 CIFAR-10-C images per
domain from 36.1% to 30.4% online error (`benchmarks/fleet/oracle_probe.md`); this module,
one round late and matching by signature, is measured in `benchmarks/fleet/README.md`.

- **Signature** (`InputSignature`): each round a device summarises its input in a few
  numbers per channel over that round's frames (25 for ResNet-20 on RGB): how much the pixels
  spread and how sharp they are, and how much the first BN's input spreads. Enough to tell
  conditions apart, nothing of any one frame.
- **Stable or changed**: the mean absolute difference between this round's signature and the
  last one (`signature_distance`), against `FleetConfig.match_threshold`. A device whose input
  held still uploads its statistics; one whose input moved asks for the nearest entry.
- **Bank** (`StatisticsBank`, on the server): entries of (signature, statistics). A stable
  device's upload moves the nearest entry within the threshold toward it (a running mean over
  the last `BANK_MEMORY` uploads, so an entry follows what devices see now) or starts an entry.
  A changed device gets the nearest entry within the threshold, if any, and loads it in place
  of its own statistics before its next round.

What leaves a device: the signature and, when its input held still, its BNs' running means and
variances (averages over hundreds of frames). Never an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgeadapt.fleet.config import FleetError
from edgeadapt.fleet.payload import state_copies

__all__ = [
    "BANK_MEMORY",
    "InputSignature",
    "StatisticsBank",
    "load_stream_statistics",
    "signature_distance",
    "stream_statistics",
    "stream_statistics_keys",
]

# An entry is the running mean of at most the last BANK_MEMORY uploads: enough to average out
# one device's lag (its statistics still carry some of its previous domain), short enough to
# follow entries that improve as devices load them and adapt on.
BANK_MEMORY = 8


def stream_statistics_keys(adapter: nn.Module, exclude: set[str] | frozenset[str] = frozenset()):
    """State-dict keys of every BN's running mean and variance in `adapter` (the stream
    statistics a device normalises with), less `exclude` (what the fleet already averages)."""
    keys = []
    for name, module in adapter.named_modules():
        if isinstance(module, _BatchNorm) and module.running_mean is not None:
            keys += [f"{name}.running_mean", f"{name}.running_var"]
    return [k for k in keys if k not in exclude]


def stream_statistics(adapter: nn.Module, keys: list[str]) -> dict[str, Tensor]:
    return state_copies(adapter, keys)


@torch.no_grad()
def load_stream_statistics(adapter: nn.Module, statistics: dict[str, Tensor]) -> None:
    own = adapter.state_dict(keep_vars=True)
    for k, v in statistics.items():
        own[k].copy_(v.to(own[k].device, own[k].dtype))


def signature_distance(a: Tensor, b: Tensor) -> float:
    """Mean absolute difference of the signatures' logs: 0.1 is about 10% apart, per number."""
    return float((a.double() - b.double()).abs().mean())


class InputSignature:
    """Accumulates a round's input statistics (forward pre-hooks on `model` and its first BN);
    `take()` returns the round's signature and starts the next.

    Per input channel: the log of the standard deviation and of the mean absolute difference
    between neighbouring pixels, across and down (noise raises those, blur lowers them,
    contrast and fog scale them); per channel of the first BN's input, the log standard
    deviation. No means: on a class-correlated stream they follow the classes in view more
    than the input's conditions. Nothing deeper than the first BN: deeper inputs depend on the
    statistics a device normalises with, which loading a bank entry changes. On CIFAR-10-C
    rounds of 32 frames this told the same corruption from another better (ROC AUC 0.95) than
    the first BN's means and spreads alone (0.88); see benchmarks/fleet/README.md."""

    def __init__(self, model: nn.Module) -> None:
        first = next((m for m in model.modules() if isinstance(m, _BatchNorm)), None)
        if first is None:
            from edgeadapt.errors import ConfigError

            raise ConfigError(
                "matching stream statistics needs a model with a BatchNorm layer: it is the "
                "BNs' statistics the fleet matches"
            )
        self._sums: dict[str, Tensor] = {}
        self._frames = 0
        self._handles = [
            model.register_forward_pre_hook(self._record_input),
            first.register_forward_pre_hook(self._record_first_bn),
        ]

    def _add(self, name: str, per_frame_mean: Tensor, frames: int) -> None:
        value = per_frame_mean * frames
        self._sums[name] = self._sums[name] + value if name in self._sums else value

    def _record_input(self, _module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0].detach().to(torch.float64)
        n, dims = x.shape[0], (0, 2, 3)
        self._add("mean", x.mean(dims), n)
        self._add("square", (x * x).mean(dims), n)
        self._add("across", (x[..., 1:] - x[..., :-1]).abs().mean(dims), n)
        self._add("down", (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dims), n)
        self._frames += n

    def _record_first_bn(self, _module: nn.Module, args: tuple[Tensor, ...]) -> None:
        y = args[0].detach().to(torch.float64)
        self._add("bn_mean", y.mean((0, 2, 3)), y.shape[0])
        self._add("bn_square", (y * y).mean((0, 2, 3)), y.shape[0])

    def take(self) -> Tensor | None:
        """The signature of the frames since the last `take` (None if there were none)."""
        if not self._frames:
            return None
        a = {k: v / self._frames for k, v in self._sums.items()}
        self._sums, self._frames = {}, 0

        def log_std(mean: Tensor, square: Tensor) -> Tensor:
            return 0.5 * (square - mean * mean).clamp_min(1e-12).log()

        parts = [log_std(a["mean"], a["square"]), a["across"].clamp_min(1e-12).log(),
                 a["down"].clamp_min(1e-12).log(), log_std(a["bn_mean"], a["bn_square"])]  # fmt: skip
        return torch.cat(parts).to(torch.float32)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class _Entry:
    signature: Tensor
    statistics: dict[str, Tensor]
    uploads: int


class StatisticsBank:
    """The server's entries of (signature, stream statistics); see the module docstring."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.entries: list[_Entry] = []
        # The first upload's shapes: signature, then each statistic. Tensors of other shapes
        # would broadcast into an entry (a (1,) mean into a (C,) one) without an error.
        self._layout: list[tuple[int, ...]] | None = None

    def _check_layout(self, signature: Tensor, statistics: dict[str, Tensor] | None) -> None:
        shapes = [tuple(signature.shape)]
        if statistics is not None:
            shapes += [tuple(v.shape) for v in statistics.values()]
        if self._layout is None:
            if statistics is None:
                return  # a lookup before any upload: nothing to compare with
            self._layout = shapes
        known = self._layout if statistics is not None else self._layout[:1]
        if shapes != known:
            raise FleetError(
                f"a device sent an input signature or statistics of shapes {shapes[:4]}, where "
                f"the fleet's are {known[:4]}; every device must wrap the same model with the "
                "same config"
            )

    def nearest(self, signature: Tensor) -> _Entry | None:
        """The entry nearest `signature`, if within the threshold."""
        if not self.entries:
            return None
        best = min(self.entries, key=lambda e: signature_distance(e.signature, signature))
        return best if signature_distance(best.signature, signature) < self.threshold else None

    def add(self, signature: Tensor, statistics: dict[str, Tensor]) -> None:
        """A stable device's statistics: into the nearest entry, or a new one."""
        self._check_layout(signature, statistics)
        entry = self.nearest(signature)
        if entry is None:
            stats = {k: v.detach().to(torch.float64).clone() for k, v in statistics.items()}
            self.entries.append(_Entry(signature.detach().to(torch.float64).clone(), stats, 1))
            return
        entry.uploads += 1
        w = 1.0 / min(entry.uploads, BANK_MEMORY)
        entry.signature += (signature.to(torch.float64) - entry.signature) * w
        for k, v in statistics.items():
            entry.statistics[k] += (v.to(torch.float64) - entry.statistics[k]) * w

    def lookup(self, signature: Tensor) -> dict[str, Tensor] | None:
        """Statistics for a device whose input changed to `signature` (None: none close)."""
        self._check_layout(signature, None)
        entry = self.nearest(signature)
        if entry is None:
            return None
        return {k: v.to(torch.float32).clone() for k, v in entry.statistics.items()}
