"""The emulator -- and the native device (firmware_bridge/device) -- as a separate process
over a real pseudo-terminal: deploy, INFER, ADAPT, STREAM and the adapter round trip give
what the host computes; the memory budget and bad programs are refused with typed errors
while the old program stays active."""

from __future__ import annotations

import zlib

import pytest
import torch
from bridge.emulator_programs import LR, SHAPE, batches

from edgeadapt.firmware_bridge import BridgeClient, DeviceError, ErrorCode, Target
from edgeadapt.firmware_bridge.emulator import pty_supported
from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state, state_to_blob
from edgeadapt.firmware_bridge.emulator.payloads import (
    decode_input,
    decode_output,
    encode_raw,
    encode_u8_affine,
)
from edgeadapt.firmware_bridge.validation import device_infer, validate

pytestmark = pytest.mark.skipif(not pty_supported(), reason="needs pseudo-terminals")


@pytest.fixture(scope="module")
def client(device_process, programs):
    dev = BridgeClient.open(device_process.port, timeout=5.0, retries=2)
    info = dev.connect()
    assert info.profile == "stm32h743" and info.ram_bytes > 0
    dev.upload(programs.infer)
    dev.upload(programs.train, target=Target.TRAINING)
    yield dev
    dev.close()


def _host_infer(program: bytes):
    from edgeadapt.export.executorch_program import ExecuTorchRunner

    return ExecuTorchRunner.from_bytes(program).run


def test_deploy_and_infer_match_the_host_program(client, programs) -> None:
    assert client.connect().program_crc == zlib.crc32(programs.infer)
    host = _host_infer(programs.infer)
    x = batches(1, seed=5)[0]
    inline = decode_output(client.infer(encode_raw(x)).output, (SHAPE[0], -1))
    assert torch.equal(inline, host(x))  # same runtime, same bytes: bit-identical
    client.upload(encode_raw(x), target=Target.INPUT)  # the path for inputs over one frame
    assert torch.equal(decode_output(client.infer(b"").output, (SHAPE[0], -1)), host(x))
    packed = encode_u8_affine(x)
    assert len(packed) < len(encode_raw(x)) / 3
    got = decode_output(client.infer(packed).output, (SHAPE[0], -1))
    assert torch.equal(got, host(decode_input(packed, SHAPE)))
    report = validate(client, batches(3), {"host": host}, atol=0.0, rtol=0.0)
    assert report.passed and report.references["host"]["argmax_agreement"] == 1.0


def test_adapt_steps_track_the_host_training_runner(client, programs) -> None:
    from edgeadapt.export import TrainingRunner

    client.reset()  # adapter back to the program's own weights, step 0
    host = TrainingRunner.from_bytes(programs.train, lr=LR)
    for i, x in enumerate(batches(3, seed=2)):
        result = client.adapt(encode_raw(x), frame_id=i)
        logits, loss, _ = host.step(x)
        assert result.step == i + 1 and result.frame_id == i
        assert result.loss == pytest.approx(loss, rel=1e-6)
        assert torch.equal(decode_output(result.output, logits.shape), logits)
    pulled = blob_to_state(client.get_adapter())
    expected = host.parameters()
    assert set(pulled) == set(expected) == set(programs.initial)
    for name, value in expected.items():
        assert torch.equal(pulled[name], value), name
        assert not torch.equal(value, programs.initial[name]), f"{name} did not move"
    # Push the original weights back (SET_ADAPTER): the device predicts as before adapting.
    client.set_adapter(state_to_blob(programs.initial))
    assert client.connect().adapter_crc == zlib.crc32(state_to_blob(programs.initial))
    fresh = TrainingRunner.from_bytes(programs.train, lr=LR)
    x = batches(1, seed=9)[0]
    assert torch.equal(
        decode_output(client.adapt(encode_raw(x)).output, (*SHAPE[:1], -1)), fresh.step(x)[0]
    )
    with pytest.raises(DeviceError) as err:
        client.set_adapter(state_to_blob({"nope": torch.zeros(3)}))
    assert err.value.code == ErrorCode.BAD_ARGUMENT


def test_stream_batches_frames_and_adapts(client, programs) -> None:
    from edgeadapt.export import TrainingRunner

    client.set_adapter(state_to_blob(programs.initial))
    host = TrainingRunner.from_bytes(programs.train, lr=LR)
    xs = batches(2, seed=3)
    frames = [encode_raw(x[i : i + 1]) for x in xs for i in range(SHAPE[0])]
    extra = encode_raw(xs[0][:1])  # a short last batch: predicted, not adapted
    results = list(client.stream([*frames, extra], adapt=True, window=SHAPE[0]))
    assert [r.frame_id for r in results] == list(range(len(frames) + 1))
    assert [r.adapted for r in results] == [1] * len(frames) + [0]
    for b, x in enumerate(xs):
        want = host.step(x)[0]
        got = torch.cat([decode_output(r.output, (1, -1)) for r in results[4 * b : 4 * b + 4]])
        assert torch.equal(got, want)
    with pytest.raises(DeviceError) as err:  # fewer credits than a batch would deadlock
        list(client.stream(frames, adapt=True, window=2))
    assert err.value.code == ErrorCode.BAD_ARGUMENT and err.value.arg == SHAPE[0]


def test_memory_budget_and_bad_programs_are_refused(client, programs) -> None:
    before = client.connect().program_crc
    with pytest.raises(DeviceError) as err:
        client.upload(programs.big)
    assert err.value.code == ErrorCode.DOES_NOT_FIT and err.value.arg > 0
    assert "does not fit STM32H743" in err.value.text
    garbage = bytes(range(256)) * 8
    with pytest.raises(DeviceError) as err:
        client.upload(garbage)
    assert err.value.code == ErrorCode.INVALID_PROGRAM
    with pytest.raises(DeviceError) as err:
        client.upload(bytes(3 << 20))  # over the 2 MB of flash: refused at UPLOAD_BEGIN
    assert err.value.code == ErrorCode.TOO_LARGE and err.value.arg <= 2 << 20
    assert client.connect().program_crc == before  # the old program is still the active one
    with pytest.raises(DeviceError) as err:
        client.infer(b"\x00" * 5)
    assert err.value.code == ErrorCode.BAD_ARGUMENT
    x = batches(1)[0]
    assert torch.equal(device_infer(client, x), _host_infer(programs.infer)(x))


def test_memory_report_gives_each_resident_programs_plan(client, programs) -> None:
    from edgeadapt.export.executorch_program import program_memory
    from edgeadapt.firmware_bridge.memory_report import memory_dict
    from edgeadapt.firmware_bridge.protocol import MemoryFlag

    client.adapt(encode_raw(batches(1, seed=9)[0]), frame_id=90)  # the step's kernels have run
    mem = client.memory()
    assert mem.measured(MemoryFlag.PROGRAM) and mem.measured(MemoryFlag.TRAINING)
    assert mem.program_planned == sum(program_memory(programs.infer)[0])
    assert mem.training_planned == sum(program_memory(programs.train)[0])
    report = memory_dict(mem)
    step = report["programs"]["training"]
    if mem.measured(MemoryFlag.RUNTIME):  # the native device: its allocators' own counts
        assert 0 < step["method_allocator_used_bytes"] <= step["method_allocator_pool_bytes"]
        assert 0 <= step["temp_allocator_peak_bytes"] <= step["temp_allocator_pool_bytes"]
        assert step["program_ram_bytes"] > step["planned_arena_bytes"]
    else:  # the emulator runs the Python runtime: no figure it did not measure
        assert set(step) == {"planned_arena_bytes"}
        assert mem.training_method_used == 0
    # A host build has neither a painted stack nor a fixed image: nothing claimed for them.
    assert report["firmware"] == {} and not mem.measured(MemoryFlag.STACK | MemoryFlag.IMAGE)
