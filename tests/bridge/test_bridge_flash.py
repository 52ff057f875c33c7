"""The emulator's flash on disk (`--flash-dir`): staged uploads and the active programs
survive kill -9, and an activation cut at any byte leaves the old or the new version."""

from __future__ import annotations

import random
import zlib

import pytest
from bridge.emulator_programs import batches

from edgeadapt.firmware_bridge import BridgeClient, Target, UploadState
from edgeadapt.firmware_bridge import messages as m
from edgeadapt.firmware_bridge.emulator import EmulatorProcess, pty_supported
from edgeadapt.firmware_bridge.flash import Flash, PowerCut
from edgeadapt.firmware_bridge.validation import device_infer


def _blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_activation_cut_at_every_byte_leaves_old_or_new(tmp_path) -> None:
    old = {Target.PROGRAM: _blob(300, 1), Target.ADAPTER: _blob(40, 2)}
    new = _blob(333, 3)
    done = {"state": UploadState.COMMITTED, "target": int(Target.PROGRAM), "size": len(new),
            "crc": zlib.crc32(new), "request_id": 7, "code": 0, "arg": 0}  # fmt: skip
    seen = set()
    for cut in range(0, 100_000):
        folder = tmp_path / f"f{cut}"
        flash = Flash(folder, sync=False)  # cuts are simulated; fsync would only cost time
        for target, data in old.items():
            flash.activate({target: data})
        flash.stage_begin(Target.PROGRAM, len(new), zlib.crc32(new))
        flash.stage_append(new)
        flash.cut_after(cut)
        try:  # the commit: a new program, and the adapter that no longer fits it erased
            flash.activate({Target.PROGRAM: new, Target.ADAPTER: None}, done)
        except PowerCut:
            pass
        else:
            break  # the cut came after the last write: the activation is complete
        after = Flash(folder)  # power back: what does the device boot with?
        state = (after.active(Target.PROGRAM), after.active(Target.ADAPTER))
        assert state in ((old[Target.PROGRAM], old[Target.ADAPTER]), (new, None)), cut
        if state[0] == new:  # committed: the outcome says so and nothing is left staged
            assert after.outcome == done and after.staged is None, cut
        else:  # not committed: the staged upload is intact, the commit can be sent again
            assert after.staged is not None and bytes(after.staged.data) == new, cut
        seen.add(state[0] == new)
    assert seen == {False, True} and cut > len(new)  # both outcomes happened; every byte cut


def test_staged_upload_survives_reopening(tmp_path) -> None:
    flash = Flash(tmp_path)
    flash.stage_begin(Target.PROGRAM, 1000, 0x1234)
    flash.stage_append(b"a" * 600)
    flash.cut_after(150)  # power fails in the middle of the next chunk
    with pytest.raises(PowerCut):
        flash.stage_append(b"b" * 300)
    again = Flash(tmp_path)
    staged = again.staged
    assert (staged.target, staged.size, staged.crc) == (Target.PROGRAM, 1000, 0x1234)
    assert 600 <= len(staged.data) < 900 and staged.data[:600] == b"a" * 600


@pytest.mark.skipif(not pty_supported(), reason="needs pseudo-terminals")
def test_kill_9_keeps_the_active_program_and_the_staged_upload(tmp_path, programs) -> None:
    flash_dir = str(tmp_path / "flash")
    emu = EmulatorProcess("stm32h743", "--flash-dir", flash_dir)
    try:
        with BridgeClient.open(emu.port, timeout=2.0, max_payload=256) as dev:
            dev.upload(programs.infer)
            blob = programs.plain
            crc = zlib.crc32(blob)
            dev.request(m.UploadBegin(Target.PROGRAM, len(blob), crc), m.UploadStatus)
            for off in range(0, 2000, 248):  # 256 - session - offset
                dev.request(m.UploadChunk(off, blob[off : off + 248]), m.UploadStatus)
    finally:
        emu.proc.kill()  # kill -9: no chance to flush or clean up
        emu.proc.wait()
        emu.close()
    emu = EmulatorProcess("stm32h743", "--flash-dir", flash_dir)
    try:
        with BridgeClient.open(emu.port, timeout=2.0) as dev:
            assert dev.connect().program_crc == zlib.crc32(programs.infer)
            resumed = dev.upload(programs.plain)
            assert resumed >= 2000 - 248
            assert dev.connect().program_crc == zlib.crc32(programs.plain)
            from edgeadapt.export.executorch_program import ExecuTorchRunner

            x = batches(1)[0]
            want = ExecuTorchRunner.from_bytes(programs.plain).run(x)
            assert device_infer(dev, x).equal(want)
    finally:
        emu.close()
