"""The EcoTTA adaptation step as an ExecuTorch training program tracks eager PyTorch."""

from __future__ import annotations

import pytest
import torch

import edgeadapt
from edgeadapt.errors import CheckpointMismatchError
from edgeadapt.export import (
    ProgramFileError,
    TrainingRunner,
    UnsupportedExportError,
    to_training_program,
)

LR = 5e-2


STEPS = 20
# Same math, different kernels and summation order: after 20 SGD steps the meta weights
# agree to ~5e-5 and the logits to ~3e-5 (measured); 1e-3 leaves room for other CPUs.
TOL = 1e-3


def _stream() -> list[torch.Tensor]:
    """A corrupted stream: contrast-shifted, noisy batches."""
    gen = torch.Generator().manual_seed(7)
    return [1.5 * torch.randn(8, 3, 16, 16, generator=gen) + 0.3 for _ in range(STEPS)]


def _ecotta():
    torch.manual_seed(0)
    model = edgeadapt.create_model("tiny_resnet")
    # lean/recompute change memory, not values; off here only to keep the eager side fast.
    config = edgeadapt.EcoTTAConfig(
        optimizer="sgd", momentum=0.0, lr=LR, entropy_margin=10.0, lean=False, recompute=False
    )
    return edgeadapt.wrap(model, config, example_input=torch.zeros(2, 3, 16, 16))


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    adapter = _ecotta()
    path = tmp_path_factory.mktemp("train") / "ecotta_adapt.pte"
    return adapter, to_training_program(adapter, _stream()[0], path)


def test_training_program_tracks_eager_and_weights_move(program):
    adapter, report = program
    assert report.program == "adapt" and report.max_abs_error < 1e-4
    assert report.total_arena_bytes > 0
    runner = TrainingRunner(report.path, lr=LR)
    start = {k: p.detach().clone() for k, p in adapter.model.named_parameters()}
    for x in _stream():
        logits, loss, kept = runner.step(x)
        eager = adapter(x)
        assert kept == x.shape[0] and torch.isfinite(torch.tensor(loss))
        assert (logits - eager).abs().max() < TOL
    params = runner.parameters()
    eager_params = dict(adapter.model.named_parameters())
    assert set(params) == {k for k, p in eager_params.items() if p.requires_grad}
    moved = {k: float((v - start[k]).abs().max()) for k, v in params.items()}
    for name, value in params.items():
        assert (value - eager_params[name].detach()).abs().max() < TOL, name
        assert moved[name] > 0, f"{name} did not move (frozen by the program?)"
    assert max(moved.values()) > 10 * TOL  # the meta BNs move well beyond the tolerance


def test_training_runner_rejects_corrupted_program(program, tmp_path):
    _, report = program
    data = bytearray(report.path.read_bytes())
    (tmp_path / "half.pte").write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ProgramFileError, match="truncated or corrupted"):
        TrainingRunner(tmp_path / "half.pte", lr=LR)


def test_training_runner_loads_weights_and_refuses_mismatches(program):
    _, report = program
    runner = TrainingRunner(report.path, lr=LR)
    assert runner.input_shape == (8, 3, 16, 16)
    runner.forward_backward(torch.zeros(runner.input_shape))  # weights appear after one run
    before = runner.parameters()
    name = next(iter(before))
    shifted = {k: v + 1.0 for k, v in before.items()}
    runner.load_parameters(shifted)
    assert all(torch.equal(runner.parameters()[k], v) for k, v in shifted.items())
    wrong = {**before, name: torch.zeros(3)}
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        runner.load_parameters(wrong)
    assert torch.equal(runner.parameters()[name], shifted[name])  # nothing written
    runner.load_parameters({name: before[name]}, strict=False)  # only what matches
    assert torch.equal(runner.parameters()[name], before[name])


def test_training_program_for_other_methods_is_refused(tmp_path):
    model = edgeadapt.create_model("tiny_resnet")
    adapter = edgeadapt.wrap(
        model, edgeadapt.config_for("norm"), example_input=torch.zeros(2, 3, 16, 16)
    )
    with pytest.raises(UnsupportedExportError, match="'ecotta' and 'tent'"):
        to_training_program(adapter, torch.zeros(4, 3, 16, 16), tmp_path / "x.pte")


def test_report_says_what_the_arena_holds_at_its_peak(program):
    """The arena's peak by role: what the forward keeps for the backward is most of it, the
    roles add up to the bytes alive there, and the plan holds at least those bytes."""
    _, report = program
    peak = report.arena_peak
    assert peak is not None and set(peak["by_role"]) >= {"kept activations", "kept masks"}
    assert sum(peak["by_role"].values()) == peak["peak_live_bytes"] > 0
    assert report.total_arena_bytes >= peak["planned_bytes"] >= peak["peak_live_bytes"]
    # tiny_resnet's ReLUs keep bool masks and its meta networks keep their fp32 inputs.
    assert peak["by_role"]["kept masks"] > 0 and peak["by_role"]["kept activations"] > 0
    largest = peak["largest"]
    assert [t["bytes"] for t in largest] == sorted((t["bytes"] for t in largest), reverse=True)
    # The forward's own peak: before any backward tensor exists, no higher than the peak.
    assert 0 < peak["forward_peak_bytes"] <= peak["peak_live_bytes"]
    roles = {t["role"] for t in peak["forward_largest"]}
    assert roles and not roles & {"backward temporaries", "outputs"}


def test_bit_packed_masks_are_exact_and_shrink_the_arena(program, tmp_path):
    """The ReLU masks kept for the backward, packed 8 to a byte: the same step bit for bit,
    a smaller arena, and the report counts the packed masks as masks."""
    _, packed = program
    plain = to_training_program(_ecotta(), _stream()[0], tmp_path / "plain.pte", pack_masks=False)
    packed_masks, plain_masks = (r.arena_peak["by_role"]["kept masks"] for r in (packed, plain))
    # An eighth of the bytes for each packed mask; the two programs peak at different steps,
    # with different masks alive, and masks under `min_elements` stay bool.
    assert 0 < packed_masks < plain_masks / 3
    assert packed.total_arena_bytes < plain.total_arena_bytes
    runners = [TrainingRunner(r.path, lr=LR) for r in (packed, plain)]
    for x in _stream()[:3]:
        (a, loss_a, _), (b, loss_b, _) = (r.step(x) for r in runners)
        assert torch.equal(a, b) and loss_a == loss_b
    got, want = (r.parameters() for r in runners)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_trainable_tensors_live_in_the_planned_arena(program):
    """The fit check counts a training program's trainable tensors once, inside its arena: the
    program must plan every parameter it returns (a constant-segment parameter would need RAM
    of its own, and the firmware refuses such a program)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    _, report = program
    loaded = deserialize_pte_binary(report.path.read_bytes())
    plans = {p.name: p for p in getattr(loaded, "program", loaded).execution_plan}
    first = plans["__et_training_parameters_index_forward"].values[0].val.int_val
    forward = plans["forward"]
    params = [forward.values[i].val for i in forward.outputs[first:]]
    assert params and all(t.allocation_info is not None for t in params)
    planned = sum(4 * torch.Size(t.sizes).numel() for t in params)
    assert 0 < planned == report.trainable_bytes <= report.total_arena_bytes


def _steps_equal(a, b, frames) -> bool:
    """The two programs step bit-identically over `frames` (logits, loss, weights)."""
    runners = [TrainingRunner(r.path, lr=LR) for r in (a, b)]
    for x in frames:
        (la, loss_a, _), (lb, loss_b, _) = (r.step(x) for r in runners)
        if not (torch.equal(la, lb) and loss_a == loss_b):
            return False
    got, want = (r.parameters() for r in runners)
    return all(torch.equal(got[k], want[k]) for k in want)


def test_scheduling_is_exact_and_shrinks_the_arena(program, tmp_path):
    """Aliases read directly, forward ops (the L1 terms) where their inputs are made and the
    L1 gradients where they are used (`schedule`, the default): the same step bit for bit as
    autograd's graph as it is, a smaller arena, fewer runtime tables."""
    _, scheduled = program
    plain = to_training_program(_ecotta(), _stream()[0], tmp_path / "p.pte", schedule=False)
    assert _steps_equal(scheduled, plain, _stream()[:3])
    assert scheduled.total_arena_bytes < plain.total_arena_bytes
    assert scheduled.runtime_bytes_estimate < plain.runtime_bytes_estimate


def test_int8_kept_activations_keep_the_forward_and_approximate_the_gradients(tmp_path):
    """int8 kept activations (opt-in): loss and logits bit for bit those of the fp32 step
    (the forward and the stream statistics read exact values), gradients within a few
    percent, the kept activations' bytes and the arena smaller than the same step
    scheduled (int8 implies the scheduling), and the report says so."""
    fp32 = to_training_program(_ecotta(), _stream()[0], tmp_path / "s.pte", schedule=True)
    int8 = to_training_program(
        _ecotta(), _stream()[0], tmp_path / "int8.pte", int8_activations=True
    )
    assert any("int8 kept activations" in n for n in int8.notes)
    kept = [r.arena_peak["by_role"]["kept activations"] for r in (fp32, int8)]
    assert kept[1] < kept[0] / 2
    assert int8.total_arena_bytes < fp32.total_arena_bytes
    runners = [TrainingRunner(r.path, lr=0.0) for r in (fp32, int8)]
    for x in _stream()[:4]:
        (la, loss_a, _), (lb, loss_b, _) = (r.forward_backward(x) for r in runners)
        assert torch.equal(la, lb) and torch.equal(loss_a, loss_b)
        ga, gb = (r.gradients() for r in runners)
        diff = sum(float((ga[k] - gb[k]).norm()) ** 2 for k in ga) ** 0.5
        size = sum(float(ga[k].norm()) ** 2 for k in ga) ** 0.5
        assert 0 < diff < 0.05 * size
