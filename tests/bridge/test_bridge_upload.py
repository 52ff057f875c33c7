"""UPLOAD: chunked, resumable after an interruption, active only after a matching commit."""

from __future__ import annotations

import random
import zlib

import pytest

from edgeadapt.firmware_bridge import BridgeTimeoutError, DeviceError, ErrorCode, Target
from edgeadapt.firmware_bridge import messages as m


def _blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_chunked_upload_is_committed(bridge) -> None:
    client, fake = bridge(max_payload=256)
    client.connect()
    blob = _blob(10_000)
    progress = []
    assert client.upload(blob, progress=lambda done, total: progress.append(done)) == 0
    assert fake.active[Target.PROGRAM] == blob and fake.staging is None
    chunks = [r for r in fake.requests if isinstance(r, m.UploadChunk)]
    per_chunk = 256 - 4 - 4  # payload - session envelope - UPLOAD_CHUNK offset
    assert len(chunks) == -(-len(blob) // per_chunk)
    assert max(len(c.data) for c in chunks) == per_chunk
    assert progress[-1] == len(blob)
    assert client.connect().program_crc == zlib.crc32(blob)


def test_upload_resumes_after_interruption_and_old_program_stays_active(bridge) -> None:
    client, fake = bridge(max_payload=256, timeout=0.05, retries=1)
    client.connect()
    old, new = _blob(3000, 1), _blob(12_000, 2)
    client.upload(old)
    host_end = client.link.transport

    def cut_midway(done: int, total: int) -> None:
        if done >= 5000:
            host_end.cut_off = True  # the cable is pulled

    with pytest.raises(BridgeTimeoutError):
        client.upload(new, progress=cut_midway)
    assert fake.active[Target.PROGRAM] == old  # a half-written upload is never active
    staged = len(fake.staging.data)
    assert 5000 <= staged < len(new)

    host_end.cut_off = False  # plugged back in: a new session, same bytes
    client.connect()
    first_new_chunk = len(fake.requests)
    assert client.upload(new) == staged
    resent = [r for r in fake.requests[first_new_chunk:] if isinstance(r, m.UploadChunk)]
    assert resent[0].offset == staged  # nothing before the resume point was sent again
    assert fake.active[Target.PROGRAM] == new


def test_nothing_is_active_before_commit(bridge) -> None:
    client, fake = bridge()
    client.connect()
    blob = _blob(5000)
    crc = zlib.crc32(blob)
    client.request(m.UploadBegin(Target.PROGRAM, len(blob), crc), m.UploadStatus)
    for off in range(0, len(blob), 1000):
        client.request(m.UploadChunk(off, blob[off : off + 1000]), m.UploadStatus)
    assert Target.PROGRAM not in fake.active  # complete but not committed
    client.request(m.UploadCommit(Target.PROGRAM, crc), m.Ack)
    assert fake.active[Target.PROGRAM] == blob


def test_commit_with_wrong_crc_is_refused_and_discarded(bridge) -> None:
    client, fake = bridge()
    client.connect()
    blob = _blob(2000)
    wrong = zlib.crc32(blob) ^ 1
    client.request(m.UploadBegin(Target.PROGRAM, len(blob), wrong), m.UploadStatus)
    client.request(m.UploadChunk(0, blob), m.UploadStatus)
    with pytest.raises(DeviceError) as info:
        client.request(m.UploadCommit(Target.PROGRAM, wrong), m.Ack)
    assert info.value.code == ErrorCode.CRC_MISMATCH
    assert info.value.arg == zlib.crc32(blob)
    assert Target.PROGRAM not in fake.active and fake.staging is None


def test_incomplete_commit_is_refused_and_kept(bridge) -> None:
    client, fake = bridge()
    client.connect()
    blob = _blob(2000)
    client.request(m.UploadBegin(Target.PROGRAM, len(blob), zlib.crc32(blob)), m.UploadStatus)
    client.request(m.UploadChunk(0, blob[:500]), m.UploadStatus)
    with pytest.raises(DeviceError) as info:
        client.request(m.UploadCommit(Target.PROGRAM, zlib.crc32(blob)), m.Ack)
    assert (info.value.code, info.value.arg) == (ErrorCode.UPLOAD_INCOMPLETE, 500)
    assert Target.PROGRAM not in fake.active and len(fake.staging.data) == 500


def test_device_is_authoritative_about_offsets(bridge) -> None:
    client, _ = bridge()
    client.connect()
    blob = _blob(3000)
    client.request(m.UploadBegin(Target.PROGRAM, len(blob), zlib.crc32(blob)), m.UploadStatus)
    status = client.request(m.UploadChunk(1234, blob[1234:2000]), m.UploadStatus)
    assert status.next_offset == 0  # a chunk at the wrong offset is not written


def test_too_large_upload_is_refused(bridge) -> None:
    client, _ = bridge(device={"flash_bytes": 1000})
    client.connect()
    with pytest.raises(DeviceError) as info:
        client.upload(_blob(1001))
    assert (info.value.code, info.value.arg) == (ErrorCode.TOO_LARGE, 1000)
