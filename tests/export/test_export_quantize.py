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
        ["--model", "tiny_resnet", "--random-weights", "--method", "tent", "--format", "onnx",
         "--batch", "4", "--input-size", "16", "--out", str(tmp_path), "--json", str(out)]
    )  # fmt: skip
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert report["format"] == "onnx" and report["max_abs_error"] < 1e-3


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--format", "onnx", "--program", "adapt", "--method", "ecotta"], "ONNX"),
        (["--format", "onnx", "--quantize", "int8"], "ONNX"),
        (["--program", "adapt", "--method", "cotta"], "'ecotta' and 'tent'"),
        (["--format", "onnx", "--device", "stm32h743"], "--device"),
    ],
)
def test_command_rejects_what_is_not_implemented(argv, match):
    args = _parse(["--model", "tiny_resnet", *argv])
    with pytest.raises(UnsupportedExportError, match=match):
        args.func(args)


def test_command_rejects_an_unknown_device_before_exporting(tmp_path):
    from edgeadapt.export import UnknownDeviceError

    args = _parse(["--model", "tiny_resnet", "--device", "stm32h999", "--out", str(tmp_path)])
    with pytest.raises(UnknownDeviceError, match="stm32h743"):
        args.func(args)
    assert not list(tmp_path.iterdir())


def test_command_reports_a_program_that_does_not_fit(tmp_path):
    from edgeadapt.export import load_profile

    text = load_profile("nrf52840").path.read_text()
    small = tmp_path / "small_mcu.toml"
    small.write_text(text.replace("bytes = 262144", "bytes = 2048"))
    out = tmp_path / "r.json"
    args = _parse(
        ["--model", "tiny_resnet", "--random-weights", "--backend", "portable", "--batch", "2",
         "--input-size", "16", "--device", str(small), "--out", str(tmp_path), "--json", str(out)]
    )  # fmt: skip
    assert args.func(args) == 3
    report = json.loads(out.read_text())
    assert report["planned_for"] == "small_mcu" and not report["fit"]["fits"]
    assert report["fit"]["missing_bytes"] > 0 and "RAM is" in report["fit"]["message"]
    assert (tmp_path / "tiny_resnet_source_infer.bpte").exists()


def test_int8_portable_program_computes_the_reference_and_dequantizes_late(tmp_path):
    from edgeadapt.export.executorch_program import capture, lower, program_memory
    from edgeadapt.export.quantize import quantize_int8

    torch.manual_seed(0)
    model = edgeadapt.create_model("tiny_resnet").eval()
    gen = torch.Generator().manual_seed(5)
    calibration = [torch.randn(2, 3, 16, 16, generator=gen) for _ in range(3)]
    report = to_executorch_int8(
        model, calibration[0], tmp_path / "q.pte", calibration=calibration, backend="portable"
    )
    # The portable kernels do PyTorch's reference arithmetic; only fp32 sums in another order
    # can move a value across a rounding boundary (one int8 step of the logits, ~0.02 here).
    assert report.backend == "portable" and report.max_abs_error < 0.05
    # PT2E dequantizes every weight at the top of the graph; unmoved, all of them sit in the
    # arena from the start.
    early = lower(
        capture(quantize_int8(model, calibration[0], calibration), calibration[0]), "portable"
    )
    assert report.total_arena_bytes < sum(program_memory(early)[0])


@pytest.mark.parametrize(
    "settings, match",
    [("{teacher", "not JSON"), ("[1, 2]", "JSON object"), ('{"no_such": 1}', "bad settings")],
)
def test_command_rejects_bad_settings_before_exporting(tmp_path, settings, match):
    from edgeadapt.errors import ConfigError

    args = _parse(["--model", "tiny_resnet", "--method", "ecotta", "--settings", settings,
                   "--input-size", "16", "--batch", "4", "--out", str(tmp_path)])  # fmt: skip
    with pytest.raises(ConfigError, match=match):
        args.func(args)
    assert not list(tmp_path.iterdir())


def test_an_ecotta_step_that_does_not_fit_names_the_levers_left(tmp_path, capsys):
    from edgeadapt.config import SMALL_SRAM_SETTINGS
    from edgeadapt.export import load_profile

    text = load_profile("nrf52840").path.read_text()
    small = tmp_path / "small_mcu.toml"
    small.write_text(text.replace("bytes = 262144", "bytes = 2048"))
    common = ["--model", "tiny_resnet", "--random-weights", "--method", "ecotta", "--program",
              "adapt", "--batch", "1", "--input-size", "16", "--device", str(small)]  # fmt: skip
    args = _parse([*common, "--out", str(tmp_path / "a")])
    assert args.func(args) == 3
    levers = [line for line in capsys.readouterr().out.splitlines() if "smaller step:" in line]
    assert len(levers) == 2
    assert "--kept-activations int8" in levers[0] and '"skip_stages": 1' in levers[1]
    args = _parse([*common, "--kept-activations", "int8", "--settings",
                   json.dumps(SMALL_SRAM_SETTINGS), "--out", str(tmp_path / "b")])  # fmt: skip
    assert args.func(args) == 3  # 2 KB fits nothing: but no lever is left to name
    assert "smaller step:" not in capsys.readouterr().out
