"""`edgeadapt export` refuses bad input in a second, before any model load or export: exit 2,
one line on stderr that names the flag (a training-program export takes minutes, so a bad
value found after it costs the user those minutes)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from edgeadapt.cli import main
from edgeadapt.errors import InputError
from edgeadapt.export import ExportRequest, UnsupportedExportError, export_program

FAST_S = 10.0  # far under any export (the tiny ONNX one takes seconds, adapt ones minutes)
TINY = ["export", "--model", "tiny_resnet", "--input-size", "16", "--batch", "2"]


def _refused(capsys, argv: list[str]) -> str:
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert elapsed < FAST_S, f"took {elapsed:.1f} s: the check ran after slow work"
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--random-weights", "--batch", "0"], "--batch"),
        # The slow case: a training program's export took 100 s before failing.
        (["--random-weights", "--batch", "-3", "--method", "ecotta", "--program", "adapt"],
         "--batch"),
        (["--random-weights", "--input-size", "0"], "--input-size"),
        (["--random-weights", "--channels", "-1"], "--channels"),
        (["--random-weights", "--num-classes", "0"], "--num-classes"),
        # XNNPACK (the default backend) has no MCU kernels: found at the fit check before.
        (["--random-weights", "--device", "stm32h743"], "--backend"),
        (["--random-weights", "--device", "esp32s3_n8r8", "--quantize", "int8"], "--backend"),
        (["--random-weights", "--device", "stm32h999"], "--device"),
        (["--random-weights", "--method", "tentt"], "--method"),
        (["--random-weights", "--frozen-bn", "eval", "--method", "tent"], "--frozen-bn"),
        (["--random-weights", "--settings", '{"lr": 0.1}'], "--settings"),
        (["--random-weights", "--calibration-data", "x"], "--calibration-data"),
        (["--random-weights", "--quantize", "int8", "--calibration-data", "nope"],
         "--calibration-data"),
        (["--random-weights", "--method", "tent", "--adapter", "nope.pt"], "--adapter"),
        (["--random-weights", "--method", "ecotta", "--source-data", "tests",
          "--warmup-cache", "tests/conftest.py/cache"], "--warmup-cache"),
        # They shape a training program's arena: refused for a prediction program.
        (["--random-weights", "--kept-activations", "int8"], "--kept-activations"),
        (["--random-weights", "--schedule"], "--schedule"),
        (["--random-weights", "--no-schedule"], "--schedule"),
        (["--random-weights", "--program", "adapt", "--method", "tent", "--no-schedule",
          "--kept-activations", "int8"], "--no-schedule"),
        ([], "--checkpoint"),  # random weights only when asked for
        (["--checkpoint", "nope.pt"], "--checkpoint"),
        (["--checkpoint", "nope.pt", "--random-weights"], "--random-weights"),
    ],
)  # fmt: skip
def test_bad_values_exit_2_with_one_line_naming_the_flag(capsys, tmp_path, argv, flag):
    out = tmp_path / "out"
    err = _refused(capsys, [*TINY, "--out", str(out), *argv])
    assert flag in err
    assert not out.exists()  # nothing written


def test_unknown_model_names_the_flag(capsys, tmp_path):
    err = _refused(capsys, ["export", "--model", "resnet21", "--random-weights"])
    assert "--model" in err and "resnet20" in err  # says what exists


@pytest.mark.parametrize(
    "place, flag, says",
    [
        # Under a regular file: was a NotADirectoryError traceback after the export.
        (lambda d: ["--out", str(d / "somefile.txt" / "dir")], "--out", "is a file"),
        (lambda d: ["--out", str(d / "somefile.txt")], "--out", "not a folder"),
        (lambda d: ["--json", str(d)], "--json", "is a folder"),
        (lambda d: ["--json", str(d / "somefile.txt" / "r.json")], "--json", "is a file"),
    ],
)
def test_unusable_output_paths_exit_2(capsys, tmp_path, place, flag, says):
    (tmp_path / "somefile.txt").write_text("not a folder")
    err = _refused(capsys, [*TINY, "--random-weights", *place(tmp_path)])
    assert flag in err and says in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile.txt"]


def test_a_program_path_taken_by_a_folder_is_refused(capsys, tmp_path):
    (tmp_path / "tiny_resnet_source_infer.onnx").mkdir()
    err = _refused(capsys, [*TINY, "--random-weights", "--format", "onnx", "--out", str(tmp_path)])
    assert "--out" in err and "is a folder" in err


def test_a_valid_command_with_a_checkpoint_still_exports(capsys, tmp_path):
    torch.manual_seed(0)
    from edgeadapt.models import create_model

    checkpoint = tmp_path / "tiny.pt"
    torch.save(create_model("tiny_resnet").state_dict(), checkpoint)
    report = tmp_path / "new" / "sub" / "r.json"  # folders that do not exist yet are made
    code = main([*TINY, "--checkpoint", str(checkpoint), "--format", "onnx", "--out",
                 str(tmp_path / "new"), "--json", str(report)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["max_abs_error"] < 1e-3
    assert (tmp_path / "new" / "tiny_resnet_source_infer.onnx").is_file()


def test_the_request_checks_the_device_before_exporting():
    with pytest.raises(UnsupportedExportError, match="--backend portable"):
        ExportRequest(device="nrf52840").check("source")
    ExportRequest(device="nrf52840", backend="portable").check("source")
    ExportRequest(device="nrf52840", program="adapt").check("ecotta")  # always portable
    ExportRequest(device="rpi4_4gb").check("source")  # Cortex-A: XNNPACK runs there
    with pytest.raises(UnsupportedExportError, match="backend"):
        ExportRequest(backend="cuda").check("source")
    with pytest.raises(UnsupportedExportError, match="statistics"):
        ExportRequest(statistics="batch").check("source")


def test_export_program_refuses_an_empty_example_before_exporting(tmp_path):
    from edgeadapt.models import create_model

    start = time.perf_counter()
    with pytest.raises(InputError, match="at least one input"):
        export_program(
            create_model("tiny_resnet"), torch.zeros(0, 3, 16, 16), tmp_path / "x.pte",
            ExportRequest(),
        )  # fmt: skip
    assert time.perf_counter() - start < FAST_S and not list(tmp_path.iterdir())
