"""The emulator's pieces without a process: tensor layouts, adapter blobs, fault lines."""

from __future__ import annotations

import pytest
import torch

from edgeadapt.firmware_bridge.emulator import Faults, SetFaults
from edgeadapt.firmware_bridge.emulator.adapter_blob import blob_to_state, state_to_blob
from edgeadapt.firmware_bridge.emulator.faults import FaultyLine
from edgeadapt.firmware_bridge.emulator.payloads import (
    decode_input,
    encode_raw,
    encode_u8_affine,
    pixels_to_u8_affine,
    u8_affine_size,
)
from edgeadapt.firmware_bridge.errors import MessageError
from edgeadapt.normalization import IMAGENET_MEAN, IMAGENET_STD

MEAN, STD = IMAGENET_MEAN, IMAGENET_STD


def test_raw_and_u8_affine_layouts() -> None:
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(decode_input(encode_raw(x), x.shape), x)
    packed = encode_u8_affine(x)
    assert len(packed) == u8_affine_size(x.shape) == 24 + x.numel()
    span = x.amax(dim=(0, 2, 3)) - x.amin(dim=(0, 2, 3))
    err = (decode_input(packed, x.shape) - x).abs().amax(dim=(0, 2, 3))
    assert (err <= span / 255 / 2 + 1e-6).all()  # half a quantisation step per channel
    with pytest.raises(MessageError, match="fits neither layout"):
        decode_input(packed[:-1], x.shape)


def test_pixels_are_lossless_in_u8_affine() -> None:
    pixels = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    packed = pixels_to_u8_affine(pixels, MEAN, STD)
    assert len(packed) == 3096  # fits one 4096-byte frame; float32 would take 12,288
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    want = (pixels.float() / 255 - m) / s
    assert torch.allclose(decode_input(packed, pixels.shape), want, atol=1e-5)


def test_adapter_blob_round_trip_and_malformed_blobs() -> None:
    state = {"b.bias": torch.randn(4), "a.weight": torch.randn(4, 3, 1, 1)}
    blob = state_to_blob(state)
    assert blob == state_to_blob(dict(reversed(state.items())))  # deterministic: stable CRC
    back = blob_to_state(blob)
    assert set(back) == set(state) and all(torch.equal(back[k], v) for k, v in state.items())
    for bad in (blob[:10], blob[:-1], blob + b"\x00", b"XXXX" + blob[4:], b""):
        with pytest.raises(MessageError):
            blob_to_state(bad)
    huge = bytearray(blob)
    huge[19:23] = (0xFFFFFFFF).to_bytes(4, "little")  # first dimension: far past the blob
    with pytest.raises(MessageError):
        blob_to_state(bytes(huge))


def test_faults_round_trip_and_bounds() -> None:
    f = Faults(drop=1e-3, corrupt=2e-4, delay=5e-4, delay_ms=30, reset_at=0.5, boot_ms=90, seed=7)
    assert SetFaults.unpack(f.to_message().pack()).to_faults() == f
    with pytest.raises(ValueError):
        Faults(drop=1.5)
    with pytest.raises(MessageError):
        SetFaults.unpack(b"\x00" * 5)


def test_faulty_line_hits_about_the_rate() -> None:
    line = FaultyLine(Faults(drop=0.01, corrupt=0.01, seed=3))
    data = bytes(range(256)) * 400
    out = line.apply(data)
    assert 0.006 < line.counts["dropped"] / len(data) < 0.014
    assert 0.006 < line.counts["corrupted"] / len(data) < 0.014
    assert len(out) == len(data) - line.counts["dropped"]
    clean = FaultyLine()
    assert clean.apply(data) == data and not any(clean.counts.values())


def test_emulator_rejects_unknown_profile(capsys) -> None:
    from edgeadapt.firmware_bridge.emulator.__main__ import main

    assert main(["--profile", "no-such-board"]) == 2
    assert "unknown device" in capsys.readouterr().err
