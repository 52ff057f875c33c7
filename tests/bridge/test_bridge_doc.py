"""docs/bridge-protocol.md agrees with the code: every message's size, the upload targets,
the error codes, and the sections a firmware author needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeadapt.firmware_bridge import messages as m
from edgeadapt.firmware_bridge.emulator.faults import SetFaults
from edgeadapt.firmware_bridge.protocol import ErrorCode, Target

DOC = (Path(__file__).resolve().parents[2] / "docs" / "bridge-protocol.md").read_text()

# "### NAME (0xNN), 9 bytes" and "· NAME (0xNN), 4 + data" in the message headings.
_SIZE = re.compile(r"([A-Z_]+) \((0x[0-9A-F]{2})\), (\d+)(?: bytes| \+ \w+)?")


def _stated_sizes() -> dict[str, tuple[int, int]]:
    sizes = {}
    for line in DOC.splitlines():
        if line.startswith("###") or line.startswith("| 0x7"):
            for name, code, size in _SIZE.findall(line):
                sizes[name] = (int(code, 16), int(size))
    return sizes


@pytest.mark.parametrize("cls", [*m.MESSAGE_TYPES.values(), SetFaults], ids=lambda c: c.__name__)
def test_every_message_size_in_the_doc_matches_its_layout(cls) -> None:
    stated = {code: size for code, size in _stated_sizes().values()}
    assert int(cls.TYPE) in stated, f"{cls.__name__} has no size in the doc"
    assert stated[int(cls.TYPE)] == cls.LAYOUT.size, cls.__name__


def test_set_faults_size_is_stated_correctly() -> None:
    assert re.search(rf"\({SetFaults.LAYOUT.size} bytes\)", DOC)


def test_upload_target_tables_list_every_target() -> None:
    begin = DOC[DOC.index("### UPLOAD_BEGIN") :]
    begin = begin[: begin.index("\n### ", 5)]
    for target in Target:
        assert f"{int(target)} {target.name.lower()}" in begin.lower(), target.name


def test_every_error_code_is_documented() -> None:
    for code in ErrorCode:
        assert re.search(rf"\| {int(code)} \| {code.name} \|", DOC), code.name


@pytest.mark.parametrize(
    "needle",
    [
        "## 5. The training program",  # methods, inputs, outputs, how a step is applied
        "__et_training_parameters_index_forward",
        "running_mean",  # which buffers the device keeps and what GET_ADAPTER returns
        "little-endian",
        "STREAM_START while a stream is open",
        "STREAM_STOP without a stream",
        "IN_PROGRESS",
        "GET_UPLOAD",
        "request_id",
        "boot_id",
    ],
)
def test_doc_covers(needle: str) -> None:
    assert needle in DOC
