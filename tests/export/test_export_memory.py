"""Training programs keep little for backward, plan into a device's banks, store int8 weights,
and the fit check holds each arena to its bank."""

from __future__ import annotations

import pytest
import torch
from tiny_training import X, made_up_mcu, tiny_ecotta

from edgeadapt.export import TrainingRunner, check_fit, to_training_program
from edgeadapt.export.runtime_estimate import estimate_runtime_bytes
from edgeadapt.export.training import training_step_module
from edgeadapt.export.training_passes import input_free_conv_backward


class _FrozenConvs(torch.nn.Module):
    """frozen conv -> trainable batch-statistics BN -> ReLU -> frozen conv (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        from edgeadapt.export.training_ops import MaskReLU, StatsBatchNorm2d

        self.a = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False).requires_grad_(False)
        self.bn = StatsBatchNorm2d(
            torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.zeros(4)), 1e-5
        )
        self.relu = MaskReLU()
        self.b = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False).requires_grad_(False)

    def forward(self, x):
        y = self.b(self.relu(self.bn(self.a(x))))
        return (y * y).mean(), y.detach()


def _run_joint(exported, x):
    """All outputs (loss, user outputs, gradients) of a forward+backward graph."""
    args = []
    for spec in exported.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            args.append(x)
        elif spec.target in exported.state_dict:
            args.append(exported.state_dict[spec.target])
        else:
            args.append(exported.constants[spec.target])
    return exported.graph_module(*args)


def test_frozen_convs_stop_keeping_their_inputs():
    from torch.export.experimental import _export_forward_backward

    net = _FrozenConvs()
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))  # odd: output_padding
    exported = _export_forward_backward(torch.export.export(net, (x,), strict=False))
    before = _run_joint(exported, x)
    assert input_free_conv_backward(exported) == 1  # conv b; conv a needs no input gradient
    conv_backward = torch.ops.aten.convolution_backward.default
    assert not any(n.target is conv_backward for n in exported.graph.nodes)
    after = _run_joint(exported, x)
    for got, want in zip(after, before):
        assert (got - want).abs().max() < 1e-6


@pytest.fixture(scope="module")
def adapter():
    return tiny_ecotta()


# The tiny EcoTTA step's arena at batch 1 is ~45 kB in one piece (int8 weights); these banks
# hold it only together. (If the model grows, grow them: the test then fails, never passes
# by accident.)
BANKS = [24_000, 16_000, 16_000]


@pytest.fixture(scope="module")
def banked(adapter, tmp_path_factory):
    """An int8 training program planned into three banks, none big enough for all of it."""
    folder = tmp_path_factory.mktemp("banked")
    profile = made_up_mcu(folder, [(f"BANK{i}", b) for i, b in enumerate(BANKS)], "three_banks")
    report = to_training_program(adapter, X, folder / "banked.pte", device=profile, quantize="int8")
    return profile, report


def test_banked_plan_runs_and_each_arena_fits_its_bank(adapter, banked):
    profile, report = banked
    assert report.planned_for == profile.key and len(report.arena_bytes) >= 2
    assert report.total_arena_bytes > max(BANKS)  # needs more than one bank
    capacity = {b.name: b.bytes for b in profile.ram}
    for size, bank in zip(report.arena_bytes, report.arena_banks):
        assert size <= capacity[bank]
    fit = check_fit(report, profile, include_runtime=False)
    assert fit.fits, fit.message
    # The runtime verified it on export; stepping it moves the meta networks.
    runner = TrainingRunner(report.path, lr=5e-2)
    runner.step(X)  # the runtime exposes parameters after a first run
    before = runner.parameters()
    for _ in range(3):
        runner.step(X)
    assert any((runner.parameters()[k] - v).abs().max() > 0 for k, v in before.items())


def test_fit_names_the_bank_and_the_missing_bytes(banked):
    profile, report = banked
    first = next(b for b in profile.ram if b.name == report.arena_banks[0])
    grown = [first.bytes + 1000, *report.arena_bytes[1:]]
    fit = check_fit(dict(report.to_dict(), arena_bytes=grown), profile, include_runtime=False)
    assert not fit.fits and fit.shortfalls[0].where == first.name
    assert fit.shortfalls[0].missing_bytes == 1000 and "1,000 B short" in fit.message
    # What went into that bank before must now find room elsewhere, or counts as missing.
    assert fit.missing_bytes >= 1000
    # The runtime's own tables need RAM as well, and are counted by default.
    assert report.runtime_bytes_estimate == estimate_runtime_bytes(report.path.read_bytes()).bytes
    with_runtime = check_fit(report, profile)
    assert any("runtime" in p.item for p in (*with_runtime.placements, *with_runtime.shortfalls))


def test_xnnpack_programs_never_fit_an_mcu():
    sizes = {"arena_bytes": [10], "constant_bytes": 10, "backend": "xnnpack"}
    fit = check_fit(sizes, "stm32h743")
    assert not fit.fits and "portable" in fit.message
    assert check_fit(sizes, "rpi4_4gb").fits


def test_int8_training_program_stores_int8_weights_and_trains(adapter, banked):
    _, report = banked
    assert report.quantized == "int8" and report.max_abs_error < 1e-4
    step = training_step_module(adapter, quantize="int8")
    fp32 = training_step_module(adapter)
    frozen_fp32 = sum(p.numel() * 4 for p in fp32.parameters() if not p.requires_grad)
    frozen_int8 = sum(b.numel() * b.element_size() for b in step.buffers() if b.dtype == torch.int8)
    assert frozen_int8 < 0.3 * frozen_fp32 and report.constant_bytes < frozen_fp32
    trainable = {k: p for k, p in step.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD(trainable.values(), lr=5e-2)
    runner = TrainingRunner(report.path, lr=5e-2)
    for _ in range(5):
        logits, _, _ = runner.step(X)
        loss, eager_logits, _ = step(X)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert (logits - eager_logits).abs().max() < 1e-3
    got = runner.parameters()
    for name, p in trainable.items():
        assert (got[name.removeprefix("model.")] - p.detach()).abs().max() < 1e-3


def test_training_program_bundle_verifies_against_the_runtime(banked):
    from edgeadapt.export.bundled import verify_bundled_program

    _, report = banked
    (outputs,) = verify_bundled_program(report.bundled_path, atol=report.bundled_atol)
    trainable = report.trainable_bytes // 4
    # loss, logits, kept, then every gradient and every parameter
    assert sum(o.numel() for o in outputs[3:]) == 2 * trainable
