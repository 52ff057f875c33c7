"""int8 frozen backbone (PT2E + XNNPACK) with fp32 meta networks, and the export command."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import edgeadapt
from edgeadapt.export import UnsupportedExportError, to_executorch_int8
from edgeadapt.export.command import register
from edgeadapt.export.quantize import _fp32_module_names


def test_int8_program_agrees_with_fp32(tmp_path):
    torch.manual_seed(0)
    model = edgeadapt.create_model("tiny_resnet").eval()
    gen = torch.Generator().manual_seed(5)
    calibration = [torch.randn(4, 3, 16, 16, generator=gen) for _ in range(4)]
    report = to_executorch_int8(model, calibration[0], tmp_path / "q.pte", calibration=calibration)
    assert report.quantized == "int8" and report.backend == "xnnpack"
    assert report.max_abs_error < 5e-2  # against the simulated int8 graph
    # A random tiny model has near-tied logits; top-1 mostly survives int8 all the same.
    assert report.fp32_agreement >= 0.5 and report.fp32_max_abs_error < 0.5


def test_meta_networks_are_kept_fp32():
    adapter = edgeadapt.wrap(
        edgeadapt.create_model("tiny_resnet"),
        edgeadapt.EcoTTAConfig(),
        example_input=torch.zeros(2, 3, 16, 16),
    )
    names = _fp32_module_names(adapter.model)
    assert names and all(n.rsplit(".", 1)[1] in ("adapter_bn", "adapter_conv") for n in names)


def _parse(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["export", *argv])


def test_command_exports_onnx_and_writes_json(tmp_path):
    out = tmp_path / "r.json"
    args = _parse(
        ["--model", "tiny_resnet", "--method", "tent", "--format", "onnx", "--batch", "4",
         "--input-size", "16", "--out", str(tmp_path), "--json", str(out)]
    )  # fmt: skip
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert report["format"] == "onnx" and report["max_abs_error"] < 1e-3


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--format", "onnx", "--program", "adapt", "--method", "ecotta"], "ONNX"),
        (["--program", "adapt", "--quantize", "int8", "--method", "ecotta"], "int8"),
        (["--program", "adapt", "--method", "cotta"], "'ecotta' and 'tent'"),
        (["--format", "onnx", "--device", "stm32h743"], "--device needs"),
    ],
)
def test_command_rejects_what_is_not_implemented(argv, match):
    args = _parse(["--model", "tiny_resnet", *argv])
    with pytest.raises(UnsupportedExportError, match=match):
        args.func(args)
