"""The native device (firmware_bridge/device) on its own: what the shared integration tests
(test_bridge_emulator*.py, run against both kinds) do not reach -- exactly-once ADAPT by
request id, a reboot, program roles, and flash that survives kill -9 with a resumable,
atomically activated upload. Skipped without a build toolchain; a failed build fails."""

from __future__ import annotations

import time
import zlib

import pytest
import torch
from bridge.emulator_programs import LR, SHAPE, batches
from bridge.native_device import native_binary

from edgeadapt.firmware_bridge import (
    BridgeClient,
    DeviceError,
    DeviceRestartedError,
    ErrorCode,
    ResetKind,
    Target,
)
from edgeadapt.firmware_bridge import messages as m
from edgeadapt.firmware_bridge.emulator import EmulatorProcess, pty_supported
from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state
from edgeadapt.firmware_bridge.emulator.payloads import decode_output, encode_raw

pytestmark = pytest.mark.skipif(not pty_supported(), reason="needs pseudo-terminals")


def _device(flash_dir) -> EmulatorProcess:
    return EmulatorProcess("stm32h743", f"--lr={LR}", f"--flash-dir={flash_dir}",
                           executable=native_binary())  # fmt: skip


def test_adapt_is_exactly_once_and_a_reboot_keeps_flash(programs, tmp_path) -> None:
    with _device(tmp_path) as proc:
        dev = BridgeClient.open(proc.port, timeout=5.0, retries=2)
        try:
            dev.connect()
            dev.upload(programs.train, target=Target.TRAINING)
            with pytest.raises(DeviceError) as err:  # the other role's program
                dev.upload(programs.train)
            assert err.value.code == ErrorCode.WRONG_ROLE and err.value.arg == Target.TRAINING
            x, y = (encode_raw(b) for b in batches(2, seed=4))
            first = dev.adapt(x, frame_id=1, request_id=77)
            again = dev.adapt(x, frame_id=1, request_id=77)  # answered from the record
            assert first.step == again.step == 1 and again.output == first.output
            assert dev.stats().duplicates >= 1 and dev.stats().adapt_steps == 1
            with pytest.raises(DeviceError) as err:
                dev.adapt(y, frame_id=1, request_id=77)
            assert err.value.code == ErrorCode.ID_REUSED and err.value.arg == 77
            boot = dev.info.boot_id
            dev.link.request(m.Reset(int(ResetKind.REBOOT)), m.Ack)  # behind the client's back
            time.sleep(0.3)
            with pytest.raises(DeviceRestartedError):
                dev.get_adapter()
            assert dev.info.boot_id != boot and dev.info.adapter_step == 0
            assert dev.info.training_crc == zlib.crc32(programs.train)  # flash kept it
            assert blob_to_state(dev.get_adapter()).keys() == programs.initial.keys()
        finally:
            dev.close()


def test_flash_survives_kill_and_a_cut_off_upload_resumes(programs, tmp_path) -> None:
    from edgeadapt.export.executorch_program import ExecuTorchRunner

    with _device(tmp_path) as proc:
        dev = BridgeClient.open(proc.port, timeout=5.0, retries=2)
        dev.connect()
        dev.upload(programs.train, target=Target.TRAINING)
        crc, part = zlib.crc32(programs.infer), programs.infer[:3000]
        dev.request(m.UploadBegin(int(Target.PROGRAM), len(programs.infer), crc), m.UploadStatus)
        dev.request(m.UploadChunk(0, part), m.UploadStatus)
        dev.close()
        proc.proc.kill()  # kill -9 mid-upload: no goodbye
        proc.proc.wait()
    with _device(tmp_path) as proc:
        dev = BridgeClient.open(proc.port, timeout=5.0, retries=2)
        try:
            info = dev.connect()
            assert info.training_crc == zlib.crc32(programs.train) and info.program_crc == 0
            outcome = dev.upload_outcome()
            assert (outcome.state, outcome.next_offset) == (1, len(part))  # STAGING, 3000 B in
            assert dev.upload(programs.infer) == len(part)  # resumed, not restarted
            assert dev.connect().program_crc == crc
            x = batches(1, seed=6)[0]
            got = decode_output(dev.infer(encode_raw(x)).output, (SHAPE[0], -1))
            assert torch.equal(got, ExecuTorchRunner.from_bytes(programs.infer).run(x))
        finally:
            dev.close()


def test_int8_program_runs_and_matches_the_host_runtime(tmp_path) -> None:
    """The device configuration ships int8 programs (PT2E inference, int8 frozen weights in
    training): the native device must register the quantized kernels to load them at all."""
    from bridge.emulator_programs import _net

    from edgeadapt.export import to_executorch_int8
    from edgeadapt.export.executorch_program import ExecuTorchRunner

    gen = torch.Generator().manual_seed(3)
    calibration = [torch.randn(SHAPE, generator=gen) for _ in range(3)]
    path = tmp_path / "int8.pte"
    to_executorch_int8(_net().eval(), calibration[0], path, calibration=calibration,
                       backend="portable")  # fmt: skip
    program = path.read_bytes()
    with _device(tmp_path / "flash") as proc:
        dev = BridgeClient.open(proc.port, timeout=5.0, retries=2)
        try:
            dev.connect()
            dev.upload(program)
            x = batches(1, seed=9)[0]
            got = decode_output(dev.infer(encode_raw(x)).output, (SHAPE[0], -1))
        finally:
            dev.close()
    assert torch.equal(got, ExecuTorchRunner.from_bytes(program).run(x))


def test_a_scheduled_int8_training_program_steps_as_the_host_runtime(tmp_path) -> None:
    """A step exported with every memory lever (`int8_activations` implies the scheduling:
    in-place elementwise ops, arena tensors shared between instructions) on the native
    device's kernels: the same losses and logits as the host's Python runtime stepping the
    same program, and its weights move."""
    import edgeadapt
    from edgeadapt.export import TrainingRunner, to_training_program

    torch.manual_seed(0)
    model = edgeadapt.create_model("tiny_resnet")
    config = edgeadapt.EcoTTAConfig(optimizer="sgd", momentum=0.0, lr=LR, entropy_margin=10.0,
                                    lean=False, recompute=False)  # fmt: skip
    x0 = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # one frame
    adapter = edgeadapt.wrap(model, config, example_input=x0)
    path = to_training_program(adapter, x0, tmp_path / "s.pte", int8_activations=True).path
    runner = TrainingRunner(path, lr=LR)
    after = []  # the weights after each step
    with _device(tmp_path / "flash") as proc:
        dev = BridgeClient.open(proc.port, timeout=30.0, retries=2)
        try:
            dev.connect()
            dev.upload(path.read_bytes(), target=Target.TRAINING)
            gen = torch.Generator().manual_seed(5)
            for i in range(3):
                x = 1.5 * torch.randn(x0.shape, generator=gen) + 0.3  # a shifted stream
                got = dev.adapt(encode_raw(x), frame_id=i, timeout=60.0)
                logits, loss, _ = runner.step(x)
                assert got.loss == pytest.approx(loss, rel=1e-5, abs=1e-6)
                assert torch.allclose(decode_output(got.output).reshape(logits.shape), logits,
                                      atol=1e-5)  # fmt: skip
                after.append({k: v.clone() for k, v in runner.parameters().items()})
        finally:
            dev.close()
    assert max(float((after[-1][k] - v).abs().max()) for k, v in after[0].items()) > 0
