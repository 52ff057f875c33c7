"""`edgeadapt device ...` against the emulator and the native device over a real pty,
in-process."""

from __future__ import annotations

import json

import pytest
import torch
from bridge.emulator_programs import SHAPE, batches, tiny_programs
from bridge.native_device import KINDS, shared_device

from edgeadapt.cli import main
from edgeadapt.firmware_bridge.emulator import pty_supported
from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state

pytestmark = pytest.mark.skipif(not pty_supported(), reason="needs pseudo-terminals")


@pytest.fixture(scope="module", params=KINDS)
def port(request) -> str:
    emu = shared_device(request.param)
    tiny_programs()
    return emu.port


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_device_commands(port, tmp_path, capsys) -> None:
    folder = tiny_programs().folder
    plain, train = str(folder / "plain.pte"), str(folder / "train.pte")
    code, out = _run(capsys, "device", "deploy", "--port", port, "--program", plain,
                     "--training", train)  # fmt: skip
    assert code == 0 and "program:" in out and "training:" in out
    code, out = _run(capsys, "device", "info", "--port", port)
    assert code == 0 and json.loads(out)["device_info"]["profile"] == "stm32h743"
    code, out = _run(capsys, "device", "memory", "--port", port, "--json", str(tmp_path / "m.json"))
    memory = json.loads(out)
    assert code == 0 and memory == json.loads((tmp_path / "m.json").read_text())
    assert {"program", "training"} <= set(memory["measured"])
    assert memory["programs"]["training"]["planned_arena_bytes"] > 0
    report = tmp_path / "validate.json"
    code, out = _run(capsys, "device", "validate", "--port", port, "--program", plain,
                     "--n", "2", "--report", str(report))  # fmt: skip
    data = json.loads(report.read_text())
    assert code == 0 and data["passed"] and data["n_inputs"] == 2
    assert data["references"]["executorch_host"]["max_abs_error"] == 0.0
    x = tmp_path / "x.pt"
    torch.save(batches(1)[0], x)
    code, out = _run(capsys, "device", "infer", "--port", port, "--input", str(x))
    assert code == 0 and len(json.loads(out)["argmax"]) == SHAPE[0]
    frames = tmp_path / "frames.pt"
    torch.save(torch.cat(batches(2)), frames)
    code, out = _run(capsys, "device", "stream", "--port", port, "--input", str(frames),
                     "--adapt", "--window", "4")  # fmt: skip
    assert code == 0 and json.loads(out)["adapted"] == 2 * SHAPE[0]
    blob, state = tmp_path / "adapter.bin", tmp_path / "adapter.pt"
    code, _ = _run(capsys, "device", "pull-adapter", "--port", port, "--out", str(blob),
                   "--state-dict", str(state))  # fmt: skip
    loaded = torch.load(state, weights_only=True)
    assert code == 0 and set(loaded) == set(blob_to_state(blob.read_bytes()))


def test_device_errors_are_reported_not_raised(port, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program" * 10)
    assert main(["device", "deploy", "--port", port, "--program", str(bad)]) == 2
    assert "INVALID_PROGRAM" in capsys.readouterr().err
    assert main(["device", "info", "--port", str(tmp_path / "no-such-port")]) == 2
    assert "cannot open" in capsys.readouterr().err
