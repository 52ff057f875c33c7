"""Does an exported adaptation program adapt? Checked against the eager adapter, not against
the graph it was made from.

Verifying a program against its own step graph cannot catch a graph that is wrong in the same
way (a BN that normalises one frame by itself passed that check and predicted one class for
every frame). So the program and an eager copy of the adapter, with the same configuration
and the device's optimiser (SGD), run the same real images step by step, and the check fails
when
- the program's trained weights do not move (its filter keeps nothing, or a delegate froze
  them),
- its predictions are constant across inputs (one class, or logits that barely differ),
- program and eager part by more than the tolerance, in logits or in trained weights.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from edgeadapt.export.errors import VerificationError

__all__ = ["AdaptationCheck", "AdaptationCheckError", "check_adaptation"]

# Program and eager compute the same steps with other kernels and summation orders: over 20
# SGD steps of ResNet-20 EcoTTA at batch 1 they part by ~1e-5 in logits and weights
# (measured: benchmarks/export/README.md). The bounds leave room for other CPUs and still sit
# far below a real fault (a wrong statistic moves logits by 0.1 or more).
LOGIT_TOL = 2e-3  # relative to max |eager logit|, plus the same absolute
WEIGHT_TOL = 1e-3  # relative to max |eager weight|, plus the same absolute
MIN_SPREAD = 1e-3  # logits whose std across inputs, relative to their size, is below: constant
MIN_MOVE = 1e-6  # a largest weight change below this, relative to the weights' size: no update


@dataclass(frozen=True)
class AdaptationCheck:
    """What `check_adaptation` measured, and whether it passed (`reason` says why not)."""

    steps: int
    batch: int
    max_logit_diff: float  # program vs eager, over every step
    max_weight_diff: float  # trained weights after the last step
    weights_moved: float  # largest change of a trained weight in the program, relative
    updates: int  # steps whose filter kept a sample (the others apply no update)
    distinct_predictions: int  # classes the program predicted over all inputs
    logit_spread: float  # mean over classes of the logits' std across inputs, / max |logit|
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AdaptationCheckError(VerificationError):
    """The program failed `check_adaptation`: it was not written. Carries the check."""

    def __init__(self, check: AdaptationCheck) -> None:
        super().__init__(check.reason)
        self.check = check


def check_adaptation(
    adapter,
    program: bytes,
    images: Tensor,
    *,
    steps: int = 20,
    lr: float | None = None,
    momentum: float = 0.0,
    int8: bool = False,
) -> AdaptationCheck:
    """Run `steps` adaptation steps of `program` (the bytes of a training program exported
    from `adapter`) and of an eager copy of `adapter` on batches of `images` (N, C, H, W;
    cycled in order), both with SGD at `lr` (default: the adapter's) and `momentum`. `int8`:
    the program stores the frozen weights int8, so the eager copy rounds them the same way.
    The adapter itself is not changed."""
    from edgeadapt.export.training import TrainingRunner
    from edgeadapt.methods._augment import draw_views
    from edgeadapt.modules.int8 import round_frozen_convs_to_int8

    lr = float(adapter.config.lr if lr is None else lr)
    runner = TrainingRunner.from_bytes(program, lr=lr, momentum=momentum)
    batch = runner.input_shape[0]
    if images.shape[0] < batch:
        raise ValueError(f"the check needs at least {batch} images, got {images.shape[0]}")
    eager = copy.deepcopy(adapter)
    if int8:
        round_frozen_convs_to_int8(eager.model)
    eager.optimizer = torch.optim.SGD(list(eager.trainable_parameters()), lr=lr, momentum=momentum)
    start = {k: p.detach().clone() for k, p in eager.model.named_parameters() if p.requires_grad}
    logits_seen, max_logit_diff, updates = [], 0.0, 0
    batches = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]
    for i in range(steps):
        x = batches[i % len(batches)]
        draws = None
        if runner.view_count:  # the views eager will draw next, from a copy of its generator
            gen = torch.Generator().manual_seed(0)
            gen.set_state(eager.generator.get_state())
            draws = draw_views(x.shape, gen, runner.view_count, x.dtype)
        got, _, kept = runner.step(x, draws)
        want = eager(x)
        updates += int(kept > 0)
        scale = float(want.abs().max()) + 1.0
        max_logit_diff = max(max_logit_diff, float((got - want).abs().max()) / scale)
        logits_seen.append(got)
    params, eager_params = runner.parameters(), dict(eager.model.named_parameters())
    max_weight_diff = max(
        float((v - eager_params[k].detach()).abs().max())
        / (float(eager_params[k].detach().abs().max()) + 1.0)
        for k, v in params.items()
    )
    moved = max(
        float((v - start[k]).abs().max()) / (float(start[k].abs().max()) + 1.0)
        for k, v in params.items()
    )
    logits = torch.cat(logits_seen)
    spread = float(logits.std(dim=0).mean()) / (float(logits.abs().max()) + 1e-12)
    distinct = int(logits.argmax(dim=1).unique().numel())
    reason = _verdict(moved, updates, distinct, spread, max_logit_diff, max_weight_diff)
    return AdaptationCheck(
        steps=steps, batch=batch, max_logit_diff=max_logit_diff, max_weight_diff=max_weight_diff,
        weights_moved=moved, updates=updates, distinct_predictions=distinct, logit_spread=spread,
        passed=not reason, reason=reason,
    )  # fmt: skip


def _verdict(
    moved: float, updates: int, distinct: int, spread: float, logit_diff: float, weight_diff: float
) -> str:
    """'' when the program adapts and tracks eager, else why not (the first failure found)."""
    if updates == 0 or moved < MIN_MOVE:
        return (
            f"the program's trained weights did not move ({moved:.2g}, relative) in {updates} "
            "updates: its sample "
            "filter kept nothing, or its trainable ops were frozen; it does not adapt"
        )
    if distinct < 2 or spread < MIN_SPREAD:
        return (
            f"the program predicts nearly the same for every input ({distinct} distinct "
            f"classes, logit spread {spread:.2g} of their size): a normalisation that erases "
            "the input (one frame's own statistics?) or a collapsed model"
        )
    if logit_diff > LOGIT_TOL:
        return f"the program's logits part from eager by {logit_diff:.3g} (bound {LOGIT_TOL:g})"
    if weight_diff > WEIGHT_TOL:
        return (
            f"the program's trained weights part from eager by {weight_diff:.3g} "
            f"(bound {WEIGHT_TOL:g})"
        )
    return ""
