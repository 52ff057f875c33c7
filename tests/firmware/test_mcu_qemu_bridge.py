"""The bridge protocol served by the Cortex-M7 firmware in QEMU (mps2-an500, UART0 on a
pseudo-terminal), driven by the unchanged `edgeadapt device` commands on a tiny Tent adapter:
deploy, validate, a 10-frame adapting stream whose predictions and pulled weights equal the
host's eager adapter, and a reboot that keeps the committed programs.

Needs arm-none-eabi-gcc, qemu-system-arm, cmake, ninja and ../shared/deps; skips, saying what
is missing, without them -- and fails instead when EDGEADAPT_REQUIRE_FIRMWARE=1 (CI's firmware
job). The firmware is cached in its own CMake folder (EA_MCU_BUILD/fw-server-tests): a cold
build costs a few minutes (the runtime), a warm one seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _scripts import MCU_DIR, load_script
from _tiny import ADAPT_LR, ADAPT_SHAPE, export_tiny_adapter

qs = load_script("ea_qemu_server", MCU_DIR / "qemu_server.py")


def _missing() -> str:
    from edgeadapt.firmware_bridge.emulator import pty_supported

    missing = qs.mcu.missing_tools()
    if importlib.util.find_spec("executorch") is None:
        missing.append("the executorch wheel")
    if not pty_supported():
        missing.append("pseudo-terminals")
    return ", ".join(missing)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """The tiny adapter's programs, the firmware built for their operators, and QEMU serving
    it with the adapter's lr; closed after the module."""
    missing = _missing()
    if missing:
        why = (f"firmware toolchain missing: {missing} (apt-get install gcc-arm-none-eabi "
               "libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm "
               "cmake ninja-build; ../shared/deps)")  # fmt: skip
        if os.environ.get("EDGEADAPT_REQUIRE_FIRMWARE") == "1":
            pytest.fail(f"EDGEADAPT_REQUIRE_FIRMWARE=1 but {why}")
        pytest.skip(why)
    progs = export_tiny_adapter(tmp_path_factory.mktemp("qemu-bridge"))
    elf = qs.build_server([progs["infer"], progs["train"]], fw="fw-server-tests")
    with qs.QemuDevice(elf, lr=ADAPT_LR) as dev:
        yield dev, progs


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from edgeadapt.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().out


def test_deploy_validate_stream_and_pull_match_eager(device, tmp_path, capsys) -> None:
    from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state

    dev, progs = device
    port, infer, train = dev.port, str(progs["infer"]), str(progs["train"])
    code, out = _cli(capsys, "device", "deploy", "--port", port, "--program", infer,
                     "--training", train)  # fmt: skip
    assert code == 0 and "program:" in out and "training:" in out, out
    code, out = _cli(capsys, "device", "info", "--port", port)
    info = json.loads(out)["device_info"]
    assert code == 0 and info["profile"] == "an500"
    assert info["training_crc"] == zlib.crc32(progs["train"].read_bytes())
    report = tmp_path / "validate.json"
    code, _ = _cli(capsys, "device", "validate", "--port", port, "--program", infer, "--n", "2",
                   "--report", str(report))  # fmt: skip
    data = json.loads(report.read_text())
    assert code == 0 and data["passed"] and data["n_inputs"] == 2, data

    frames = 1.5 * torch.randn(10, *ADAPT_SHAPE[1:], generator=torch.Generator().manual_seed(3))
    frames += 0.3  # a shifted stream, so Tent has something to adapt to
    torch.save(frames, tmp_path / "frames.pt")
    code, out = _cli(capsys, "device", "stream", "--port", port, "--input",
                     str(tmp_path / "frames.pt"), "--adapt", "--window", "4")  # fmt: skip
    streamed = json.loads(out)
    assert code == 0 and streamed["frames"] == 10 and streamed["adapted"] == 10, streamed
    blob, state = tmp_path / "adapter.bin", tmp_path / "adapter.pt"
    code, _ = _cli(capsys, "device", "pull-adapter", "--port", port, "--out", str(blob),
                   "--state-dict", str(state))  # fmt: skip
    pulled = torch.load(state, weights_only=True)
    assert code == 0 and set(pulled) == set(blob_to_state(blob.read_bytes()))
    _check_memory_report(capsys, dev, progs)

    # The host's eager adapter on the same frames, batch by batch, from the program's state.
    adapter = progs["adapter"]
    adapter.reset()
    adapter.load_state_dict(progs["initial"])
    batch = ADAPT_SHAPE[0]
    with torch.enable_grad():
        logits = torch.cat([adapter(frames[i : i + batch]).detach()
                            for i in range(0, len(frames), batch)])  # fmt: skip
    assert streamed["predictions"] == logits.argmax(1).tolist()
    eager = {k: p.detach() for k, p in adapter.model.named_parameters() if p.requires_grad}
    assert set(pulled) == set(eager)
    for name, value in pulled.items():
        torch.testing.assert_close(value, eager[name], atol=1e-5, rtol=1e-4, msg=name)
    moved = max(float((pulled[k] - progs["initial"][f"model.{k}"]).abs().max()) for k in pulled)
    assert moved > 1e-4, "the device's SGD did not move the weights"


def _check_memory_report(capsys, dev, progs) -> None:
    """`device memory` on the Cortex-M7 build: every figure measured, and each equal to what
    the program's plan and the ELF's own section table say."""
    from edgeadapt.export.executorch_program import program_memory

    code, out = _cli(capsys, "device", "memory", "--port", dev.port)
    memory = json.loads(out)
    assert code == 0 and memory["measured"] == ["program", "training", "runtime", "stack", "image"]
    for role, key in (("inference", "infer"), ("training", "train")):
        got = memory["programs"][role]
        assert got["planned_arena_bytes"] == sum(program_memory(progs[key].read_bytes())[0])
        assert 0 < got["method_allocator_used_bytes"] <= got["method_allocator_pool_bytes"]
        assert got["temp_allocator_peak_bytes"] <= got["temp_allocator_pool_bytes"]
    firmware = memory["firmware"]
    assert 0 < firmware["stack_high_water_bytes"] < firmware["stack_bytes"]
    sections, _ = qs.mcu._sizes(dev.elf)
    assert firmware["text_bytes"] == sections[".text"] + sections.get(".ARM.exidx", 0)
    assert firmware["data_bytes"] == sections[".data"]
    assert firmware["bss_bytes"] == sections[".bss"]


def test_reboot_keeps_the_committed_programs(device) -> None:
    from edgeadapt.firmware_bridge import BridgeClient, DeviceRestartedError, ResetKind, Target
    from edgeadapt.firmware_bridge import messages as m

    dev, progs = device
    client = BridgeClient.open(dev.port, timeout=2.0, retries=3)
    try:
        client.connect()
        client.upload(progs["train"].read_bytes(), target=Target.TRAINING)  # commits again
        boot = client.info.boot_id
        client.link.request(m.Reset(int(ResetKind.REBOOT)), m.Ack)  # behind the client's back
        time.sleep(0.3)
        with pytest.raises(DeviceRestartedError):
            client.get_adapter()
        assert client.info.boot_id != boot and client.info.adapter_step == 0
        assert client.info.training_crc == zlib.crc32(progs["train"].read_bytes())
        assert client.info.program_crc == zlib.crc32(progs["infer"].read_bytes())
    finally:
        client.close()
