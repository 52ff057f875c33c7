"""Byte transports under the framing layer: pyserial URLs, an in-memory null modem, a logger.

Every transport has the same three methods -- `write(data)`, `read(max_bytes)` that waits at
most one short poll interval and may return b"", and `close()` -- so the client's timeouts are
its own and do not depend on how the port was opened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, TextIO

from edgeadapt._extras import require

from .errors import TransportError

__all__ = [
    "LoggingTransport",
    "NullModemEnd",
    "SerialTransport",
    "Transport",
    "hexdump",
    "null_modem_pair",
]

DEFAULT_POLL = 0.02  # seconds one read may block; small so timeouts stay precise


class Transport(Protocol):
    """What the client and the fake device need from a byte pipe."""

    def write(self, data: bytes) -> None: ...

    def read(self, max_bytes: int = 4096) -> bytes: ...

    def close(self) -> None: ...


class SerialTransport:
    """A pyserial port opened with `serial_for_url`.

    `url` is a device path ("/dev/ttyACM0", "COM3") or any pyserial URL: "loop://",
    "socket://host:port", "rfc2217://host:port", "spy://..." and so on.
    """

    def __init__(
        self, url: str, *, baudrate: int = 115200, poll: float = DEFAULT_POLL, **kwargs: object
    ) -> None:
        serial = require("serial", "a serial port")  # lazy: only this transport needs it

        try:
            self._port = serial.serial_for_url(
                url, baudrate=baudrate, timeout=poll, write_timeout=2.0, **kwargs
            )
        except (serial.SerialException, ValueError) as exc:
            raise TransportError(
                f"cannot open {url!r}: {exc}; check the path (see `discover()`), that no other "
                "program holds the port, and your permissions (dialout group on Linux)"
            ) from exc
        self.url = url

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._port.write(data)
            self._port.flush()
        except serial.SerialException as exc:
            raise TransportError(f"write to {self.url!r} failed: {exc}") from exc

    def read(self, max_bytes: int = 4096) -> bytes:
        import serial

        try:
            # Ask for what is waiting (at least 1, so read blocks for up to one poll).
            waiting = self._port.in_waiting
            return bytes(self._port.read(max(1, min(waiting, max_bytes))))
        except serial.SerialException as exc:
            raise TransportError(f"read from {self.url!r} failed: {exc}") from exc

    def close(self) -> None:
        self._port.close()


class NullModemEnd:
    """One end of an in-memory, thread-safe cable; what one end writes, the other reads.

    `mangle`, if set, sees every write and returns what actually goes down the wire: tests use
    it to drop, flip or cut bytes. `cut()` severs the cable until `mend()`.
    """

    def __init__(self, poll: float = DEFAULT_POLL) -> None:
        self.poll = poll
        self.peer: NullModemEnd | None = None
        self.mangle: Callable[[bytes], bytes] | None = None
        self.cut_off = False
        self._rx = bytearray()
        self._cond = threading.Condition()
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise TransportError("write on a closed null-modem end")
        if self.mangle is not None:
            data = self.mangle(bytes(data))
        peer = self.peer
        if peer is None or self.cut_off or not data:
            return
        with peer._cond:
            peer._rx += data
            peer._cond.notify_all()

    def read(self, max_bytes: int = 4096) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._rx or self._closed, timeout=self.poll)
            data = bytes(self._rx[:max_bytes])
            del self._rx[:max_bytes]
            return data

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def null_modem_pair(poll: float = DEFAULT_POLL) -> tuple[NullModemEnd, NullModemEnd]:
    """Two connected ends: give one to the client, the other to the fake device."""
    a, b = NullModemEnd(poll), NullModemEnd(poll)
    a.peer, b.peer = b, a
    return a, b


def hexdump(data: bytes, width: int = 16) -> list[str]:
    """Lines of `offset  hex bytes  |ascii|`, as in `hexdump -C`."""
    lines = []
    for off in range(0, len(data), width):
        chunk = data[off : off + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {chunk.hex(' '):<{width * 3 - 1}}  |{text}|")
    return lines


class LoggingTransport:
    """Wrap a transport and hex-dump every byte written (TX) and read (RX) to `sink`.

    `sink` is a `logging.Logger` (lines at DEBUG) or a text file opened for writing.
    """

    def __init__(self, inner: Transport, sink: logging.Logger | TextIO) -> None:
        self.inner = inner
        self.sink = sink

    def _log(self, direction: str, data: bytes) -> None:
        lines = [f"{direction} {len(data)} bytes", *("  " + line for line in hexdump(data))]
        if isinstance(self.sink, logging.Logger):
            for line in lines:
                self.sink.debug(line)
        else:
            self.sink.write("\n".join(lines) + "\n")
            self.sink.flush()

    def write(self, data: bytes) -> None:
        self._log("TX", data)
        self.inner.write(data)

    def read(self, max_bytes: int = 4096) -> bytes:
        data = self.inner.read(max_bytes)
        if data:
            self._log("RX", data)
        return data

    def close(self) -> None:
        self.inner.close()
