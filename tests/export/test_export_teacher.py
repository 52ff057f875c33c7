"""EcoTTA with its mean teacher as an ExecuTorch training program: the program updates the
teacher itself, takes the views' random numbers as inputs, and tracks eager PyTorch."""

from __future__ import annotations

import pytest
import torch

import edgeadapt
from edgeadapt.export import TrainingRunner, to_training_program
from edgeadapt.export.bundled import verify_bundled_program

LR = 5e-2
STEPS = 12
TOL = 1e-3  # as tests/export/test_export_training.py: same math, other kernels


def _stream() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return [0.3 * torch.randn(8, 3, 16, 16, generator=gen) + 0.5 for _ in range(STEPS)]


def _teacher_adapter(views: int):
    torch.manual_seed(0)
    config = edgeadapt.EcoTTAConfig(
        optimizer="sgd", momentum=0.0, lr=LR, lean=False, recompute=False,
        teacher_momentum=0.8,  # far from 1, so the teacher moves visibly in a few steps
        teacher_views=views, input_mean=(0.5, 0.5, 0.5), input_std=(0.25, 0.25, 0.25),
    )  # fmt: skip
    model = edgeadapt.create_model("tiny_resnet")
    return edgeadapt.wrap(model, config, example_input=torch.zeros(2, 3, 16, 16))


@pytest.fixture(scope="module", params=[0, 2], ids=["teacher", "teacher+2views"])
def program(request, tmp_path_factory):
    adapter = _teacher_adapter(request.param)
    adapter(_stream()[-1])  # one eager step first: the teacher and student now differ
    path = tmp_path_factory.mktemp("teacher") / "ecotta_teacher_adapt.pte"
    return adapter, to_training_program(adapter, _stream()[0], path)


def test_teacher_program_tracks_eager_and_weights_move(program):
    adapter, report = program
    assert report.program == "adapt" and report.max_abs_error < 1e-4
    runner = TrainingRunner(report.path, lr=LR)
    assert runner.view_count == adapter.config.teacher_views
    runner.generator.set_state(adapter.generator.get_state())  # the same views as eager
    start = {k: p.detach().clone() for k, p in adapter.model.named_parameters()}
    teacher_start = {k: t.clone() for k, t in adapter._teacher().items()}
    for x in _stream():
        logits, loss, kept = runner.step(x)
        eager = adapter(x)  # the teacher's prediction, as the program's
        assert kept == x.shape[0] and torch.isfinite(torch.tensor(loss))
        assert (logits - eager).abs().max() < TOL
    params, eager_params = runner.parameters(), dict(adapter.model.named_parameters())
    assert set(params) == {k for k, p in eager_params.items() if p.requires_grad}
    for name, value in params.items():
        assert (value - eager_params[name].detach()).abs().max() < TOL, name
    moved = max(float((v - start[k]).abs().max()) for k, v in params.items())
    assert moved > 10 * TOL  # the meta networks train in the program
    # The teacher moved as well, and predictions follow it: the student predicts otherwise.
    teacher_moved = max(float((t - teacher_start[k]).abs().max())
                        for k, t in adapter._teacher().items())  # fmt: skip
    assert teacher_moved > 10 * TOL
    x = _stream()[0]
    with torch.no_grad():
        student = adapter.model(x)
    assert (student - adapter.predict(x)).abs().max() > 10 * TOL


def test_teacher_program_bundle_verifies_on_the_runtime(program):
    _, report = program
    outputs = verify_bundled_program(report.bundled_path, atol=report.bundled_atol)
    assert len(outputs) == 1


def test_plain_program_refuses_view_draws(tmp_path):
    adapter = _teacher_adapter(0)
    report = to_training_program(adapter, _stream()[0], tmp_path / "t.pte")
    runner = TrainingRunner(report.path, lr=LR)
    with pytest.raises(ValueError, match="no views"):
        runner.forward_backward(_stream()[0], (torch.zeros(1),))


def test_teacher_program_with_int8_frozen_weights_verifies(tmp_path):
    adapter = _teacher_adapter(2)
    report = to_training_program(adapter, _stream()[0], tmp_path / "q.pte", quantize="int8")
    assert report.quantized == "int8" and report.max_abs_error < 1e-4
    verify_bundled_program(report.bundled_path, atol=report.bundled_atol)


def test_command_exports_the_teacher_option(tmp_path, capsys):
    import argparse
    import json

    from edgeadapt.export.command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    settings = json.dumps({"teacher_momentum": 0.999, "teacher_views": 2})
    args = parser.parse_args(
        ["export", "--model", "tiny_resnet", "--random-weights", "--method", "ecotta",
         "--settings", settings, "--program", "adapt", "--batch", "4", "--input-size", "16",
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert args.func(args) == 0
    runner = TrainingRunner(tmp_path / "tiny_resnet_ecotta_adapt.pte", lr=LR)
    assert runner.view_count == 2
    # Its views un-normalise the input with ImageNet's statistics, as the command calibrates.
    assert "normalised with ImageNet's mean/std" in capsys.readouterr().out
