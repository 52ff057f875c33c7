"""The emulator's side of the v2 session rules: program roles checked on upload, long
operations answered with keep-alives, a reboot detected by the host, and a training program's
state reset to exactly what a fresh host runner starts from."""

from __future__ import annotations

import threading
import time
import zlib

import pytest
import torch
from bridge.emulator_programs import LR, SHAPE, batches

from edgeadapt.firmware_bridge import (
    BridgeClient,
    DeviceError,
    DeviceRestartedError,
    ErrorCode,
    ResetKind,
    Target,
    null_modem_pair,
)
from edgeadapt.firmware_bridge import messages as m
from edgeadapt.firmware_bridge.emulator import pty_supported
from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state, state_to_blob
from edgeadapt.firmware_bridge.emulator.payloads import decode_output, encode_raw, encode_u8_affine


@pytest.fixture
def inproc(programs):
    """An EmulatedDevice in this process over a null modem (so a test can slow it down)."""
    from edgeadapt.export.devices import load_profile
    from edgeadapt.firmware_bridge.emulator.device import EmulatedDevice

    host_end, dev_end = null_modem_pair(poll=0.005)
    device = EmulatedDevice(dev_end, load_profile("stm32h743"), lr=LR)
    stop = threading.Event()
    thread = threading.Thread(target=device.serve_forever, args=(stop,), daemon=True)
    thread.start()
    yield host_end, device
    stop.set()
    thread.join(timeout=5)


def test_training_program_is_refused_as_the_inference_program(inproc, programs) -> None:
    host_end, _ = inproc
    dev = BridgeClient(host_end, timeout=2.0)
    dev.upload(programs.infer)
    for blob, target, fits in ((programs.train, Target.PROGRAM, Target.TRAINING),
                               (programs.infer, Target.TRAINING, Target.PROGRAM)):  # fmt: skip
        with pytest.raises(DeviceError) as err:
            dev.upload(blob, target=target)
        assert (err.value.code, err.value.arg) == (ErrorCode.WRONG_ROLE, fits)
        assert f"target {fits.name}" in err.value.text
    assert dev.connect().program_crc == zlib.crc32(programs.infer)
    out = decode_output(dev.infer(encode_raw(batches(1)[0])).output)
    assert out.numel() == SHAPE[0] * 3  # still the inference program's 4x3 logits


def _half_training(train: bytes, how: str) -> bytes:
    """The training program with one training method gone, or its parameter index wrong."""
    from executorch.exir._serialize._program import serialize_pte_binary

    from edgeadapt.firmware_bridge.emulator.programs import _pte

    pte = _pte(train)
    plans = pte.program.execution_plan
    if how == "method":
        plans[:] = [p for p in plans if p.name != "__et_training_gradients_index_forward"]
    else:
        index = next(p for p in plans if p.name == "__et_training_parameters_index_forward")
        index.values[0].val.int_val += 1
    return bytes(serialize_pte_binary(pte))


@pytest.mark.parametrize("how", ["method", "index"])
def test_a_program_of_neither_role_is_refused(inproc, programs, how) -> None:
    # Without its gradient index a training program's forward still runs as an inference
    # program would -- and INFER would answer its scalar loss instead of logits.
    host_end, _ = inproc
    dev = BridgeClient(host_end, timeout=2.0)
    dev.upload(programs.infer)
    blob = _half_training(programs.train, how)
    for target in (Target.PROGRAM, Target.TRAINING):
        with pytest.raises(DeviceError) as err:
            dev.upload(blob, target=target)
        assert err.value.code == ErrorCode.INVALID_PROGRAM, err.value.text
    info = dev.connect()
    assert (info.program_crc, info.training_crc) == (zlib.crc32(programs.infer), 0)


def test_a_commit_slower_than_the_timeout_is_waited_for(inproc, programs, monkeypatch) -> None:
    host_end, device = inproc
    load = device.programs.load

    def slow_load(*args, **kwargs):
        time.sleep(1.5)  # a big program on a small device
        return load(*args, **kwargs)

    monkeypatch.setattr(device.programs, "load", slow_load)
    dev = BridgeClient(host_end, timeout=0.3, retries=2)  # gives up after 0.9 s of silence
    dev.upload(programs.infer)
    assert dev.connect().program_crc == zlib.crc32(programs.infer)
    assert dev.link.counters["keepalives"] >= 3


def test_a_long_step_after_a_boot_is_announced(programs, monkeypatch) -> None:
    # The runtime holds the interpreter while it runs, so the keep-alive timer cannot send;
    # the device must announce the run. After a boot the programs are loaded from flash
    # without a dry run: their first run has no measured time and must still be announced.
    from edgeadapt.export.devices import load_profile
    from edgeadapt.firmware_bridge.emulator import Faults
    from edgeadapt.firmware_bridge.emulator.device import EmulatedDevice

    monkeypatch.setattr(EmulatedDevice, "_tick", lambda self, stop: None)
    host_end, dev_end = null_modem_pair(poll=0.005)
    device = EmulatedDevice(dev_end, load_profile("stm32h743"), lr=LR, faults=Faults(boot_ms=0))
    stop = threading.Event()
    thread = threading.Thread(target=device.serve_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        dev = BridgeClient(host_end, timeout=0.3, retries=1)  # 0.6 s of silence at most
        dev.upload(programs.train, target=Target.TRAINING)
        dev.reset(ResetKind.REBOOT)
        step = device.programs.run_step

        def slow_step(x):
            time.sleep(1.0)  # a ResNet-sized step on a small core
            return step(x)

        monkeypatch.setattr(device.programs, "run_step", slow_step)
        assert dev.adapt(encode_raw(batches(1)[0])).step == 1
        assert dev.reboots == 1 and dev.link.counters["keepalives"] >= 1
        assert device.programs.loaded[Target.TRAINING].seconds >= 1.0  # timed for the next
    finally:
        stop.set()
        thread.join(timeout=5)


def test_a_slow_adapting_stream_is_waited_for(inproc, programs, monkeypatch) -> None:
    host_end, device = inproc
    dev = BridgeClient(host_end, timeout=0.3, retries=1)
    dev.upload(programs.infer)
    dev.upload(programs.train, target=Target.TRAINING)
    step = device.programs.run_step

    def slow_step(x):
        time.sleep(1.0)
        return step(x)

    monkeypatch.setattr(device.programs, "run_step", slow_step)
    frames = [encode_raw(x[i : i + 1]) for x in batches(2, seed=3) for i in range(SHAPE[0])]
    results = list(dev.stream(frames, adapt=True, window=SHAPE[0]))
    assert [r.adapted for r in results] == [1] * len(frames)


def test_training_state_resets_to_what_a_fresh_host_runner_starts_from(inproc, programs) -> None:
    from edgeadapt.export import TrainingRunner
    from edgeadapt.firmware_bridge.emulator.programs import with_parameters

    host_end, _ = inproc
    dev = BridgeClient(host_end, timeout=2.0)
    dev.upload(programs.train, target=Target.TRAINING)
    xs = batches(2, seed=2)
    host = TrainingRunner.from_bytes(programs.train, lr=LR)
    for x in xs:  # the commit's checks must not have moved the BN stream statistics
        result = dev.adapt(encode_raw(x))
        logits, loss, _ = host.step(x)
        assert result.loss == loss and torch.equal(decode_output(result.output, logits.shape),
                                                   logits)  # fmt: skip
    pushed = {k: v + 0.01 for k, v in programs.initial.items()}
    dev.set_adapter(state_to_blob(pushed))  # parameters pushed, buffers back to the program's
    host = TrainingRunner.from_bytes(with_parameters(programs.train, pushed), lr=LR)
    assert blob_to_state(dev.get_adapter()).keys() == pushed.keys()
    for x in xs:
        assert dev.adapt(encode_raw(x)).loss == host.step(x)[1]
    dev.reset(ResetKind.ADAPTER)
    host = TrainingRunner.from_bytes(with_parameters(programs.train, pushed), lr=LR)
    assert dev.adapt(encode_raw(xs[0])).loss == host.step(xs[0])[1]


@pytest.mark.skipif(not pty_supported(), reason="needs pseudo-terminals")
def test_reboot_restores_the_negotiated_size_through_a_new_handshake(emulator, programs) -> None:
    dev = BridgeClient.open(emulator.port, timeout=2.0, retries=2, max_payload=1024)
    try:
        dev.connect()
        dev.upload(programs.train, target=Target.TRAINING)
        assert dev.adapt(encode_u8_affine(batches(1)[0])).step == 1
        boot = dev.info.boot_id
        # Someone else reboots it (a watchdog, a power glitch): this client is not told.
        dev.link.request(m.Reset(int(ResetKind.REBOOT)), m.Ack)
        time.sleep(0.5)
        with pytest.raises(DeviceRestartedError):
            dev.get_adapter()
        assert dev.info.boot_id != boot and dev.reboots == 1
        assert dev.info.max_payload == dev.link.max_payload == 1024  # negotiated again
        assert dev.info.adapter_step == 0  # adapted weights were RAM
        assert blob_to_state(dev.get_adapter()).keys() == programs.initial.keys()
    finally:
        dev.close()
