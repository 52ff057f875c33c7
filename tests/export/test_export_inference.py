"""ONNX and ExecuTorch inference round trips: plain models and adapters, verified on export."""

from __future__ import annotations

import hashlib

import pytest
import torch

import edgeadapt
from edgeadapt.export import (
    ExecuTorchRunner,
    ExportError,
    OnnxRunner,
    ProgramFileError,
    to_executorch,
    to_onnx,
)

X = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def _adapter(method: str):
    torch.manual_seed(0)
    model = edgeadapt.create_model("tiny_resnet")
    extra = {"entropy_margin": 10.0} if method == "ecotta" else {}
    adapter = edgeadapt.wrap(
        model, edgeadapt.config_for(method, lr=1e-2, **extra), example_input=X[:2]
    )
    adapter(X)  # one step, so the program carries adapted (not initial) weights
    return adapter


@pytest.mark.parametrize("method", ["source", "tent", "ecotta"])
def test_onnx_round_trip_matches_the_adapter(tmp_path, method):
    model = edgeadapt.create_model("tiny_resnet").eval() if method == "source" else _adapter(method)
    report = to_onnx(model, X, tmp_path / "m.onnx")
    assert report.path.stat().st_size == report.file_bytes > 0
    assert report.sha256 == hashlib.sha256(report.path.read_bytes()).hexdigest()
    assert report.max_abs_error < 1e-4
    # BNs on stream statistics take single frames: no BN needs the batch's own alone.
    assert not report.batch_statistics
    with torch.no_grad():
        expected = model(X) if method == "source" else _frozen(model)
    # Batch axis is dynamic: another batch size runs too.
    runner = OnnxRunner(report.path)
    assert (runner.run(X) - expected).abs().max() < 1e-4
    assert runner.run(X[:3]).shape == (3, 10)


def _frozen(adapter):
    with adapter.frozen():
        return adapter(X)


@pytest.fixture(scope="module")
def ecotta_pte(tmp_path_factory):
    adapter = _adapter("ecotta")
    path = tmp_path_factory.mktemp("pte") / "ecotta.pte"
    return adapter, to_executorch(adapter, X, path, backend="xnnpack")


def test_executorch_round_trip_matches_the_adapter(ecotta_pte):
    adapter, report = ecotta_pte
    assert report.max_abs_error < 1e-4
    assert report.file_bytes == report.path.stat().st_size
    assert report.to_dict()["sha256"] == hashlib.sha256(report.path.read_bytes()).hexdigest()
    assert report.total_arena_bytes > X.numel() * 4  # at least the input lives in the arena
    assert 0 < report.constant_bytes < report.file_bytes
    got = ExecuTorchRunner(report.path).run(X)
    assert (got - _frozen(adapter)).abs().max() < 1e-4
    assert report.to_dict()["total_arena_bytes"] == report.total_arena_bytes


def test_portable_backend_and_running_statistics(tmp_path):
    adapter = _adapter("tent")
    report = to_executorch(adapter, X, tmp_path / "p.pte", backend="portable", statistics="running")
    assert not report.batch_statistics and report.max_abs_error < 1e-4


def test_truncated_and_foreign_files_are_typed_errors(ecotta_pte, tmp_path):
    _, report = ecotta_pte
    data = report.path.read_bytes()
    (tmp_path / "half.pte").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pte").write_bytes(b"\x00" * 64)
    (tmp_path / "half.onnx").write_bytes(b"\x08\x07\x12\x05junk")
    with pytest.raises(ProgramFileError, match="truncated or corrupted"):
        ExecuTorchRunner(tmp_path / "half.pte")
    with pytest.raises(ProgramFileError, match="not an ExecuTorch program"):
        ExecuTorchRunner(tmp_path / "junk.pte")
    with pytest.raises(ProgramFileError, match="ONNX"):
        OnnxRunner(tmp_path / "half.onnx")
    with pytest.raises(ProgramFileError, match="no ExecuTorch file"):
        ExecuTorchRunner(tmp_path / "missing.pte")


class _DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a value: export cannot trace it
            return x.flatten(1)
        return -x.flatten(1)


def test_non_exportable_model_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match="could not capture"):
        to_executorch(_DataDependent(), X, tmp_path / "bad.pte")
    assert not (tmp_path / "bad.pte").exists()


def test_bundled_program_verifies_and_catches_wrong_expectations(ecotta_pte, tmp_path):
    from edgeadapt.export import VerificationError
    from edgeadapt.export.bundled import BundledCase, verify_bundled_program, write_bundled_program

    _, report = ecotta_pte
    assert report.bundled_path.exists() and report.bundled_atol > 0
    (outputs,) = verify_bundled_program(report.bundled_path, atol=report.bundled_atol)
    assert (outputs[0] - ExecuTorchRunner(report.path).run(X)).abs().max() < 1e-6
    wrong = tmp_path / "wrong.pte"
    wrong.write_bytes(report.path.read_bytes())
    bundle = write_bundled_program(wrong, [BundledCase((X,), (outputs[0] + 0.5,))])
    with pytest.raises(VerificationError, match="test case 0"):
        verify_bundled_program(bundle, atol=report.bundled_atol)
    data = report.bundled_path.read_bytes()
    (tmp_path / "half.bpte").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProgramFileError, match="bundled"):
        verify_bundled_program(tmp_path / "half.bpte", atol=1.0)


def test_corrupted_program_tables_are_a_typed_error(ecotta_pte, tmp_path):
    _, report = ecotta_pte
    data = bytearray(report.path.read_bytes())
    data[8:72] = bytes(range(64))  # the flatbuffer's root tables, past the 'ET' identifier
    (tmp_path / "bad.pte").write_bytes(bytes(data))
    with pytest.raises(ProgramFileError, match="truncated or corrupted"):
        ExecuTorchRunner(tmp_path / "bad.pte")


class _Inverse(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.inv(x[:, 0, :4, :4] + 4 * torch.eye(4))  # no ExecuTorch kernel


def test_op_outside_executorch_is_an_export_error_naming_it(tmp_path):
    with pytest.raises(ExportError, match="linalg_inv"):
        to_executorch(_Inverse(), X, tmp_path / "inv.pte", backend="portable")
    assert not (tmp_path / "inv.pte").exists()
