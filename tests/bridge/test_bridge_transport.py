"""Transports: pyserial URLs (loop://, socket://), the null modem, the traffic log."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time

import pytest

from edgeadapt.firmware_bridge import (
    BridgeClient,
    BridgeTimeoutError,
    FakeDevice,
    FrameDecoder,
    LoggingTransport,
    SerialTransport,
    TransportError,
    encode_frame,
    null_modem_pair,
)


def test_loop_url_carries_frames() -> None:
    port = SerialTransport("loop://", poll=0.01)
    try:
        wire = encode_frame(0x85, b"\x00looped\x00", seq=4)
        port.write(wire)
        dec, got = FrameDecoder(), []
        deadline = time.monotonic() + 1.0
        while not got and time.monotonic() < deadline:
            got = dec.feed(port.read())
        assert got[0].payload == b"\x00looped\x00"
    finally:
        port.close()


def test_client_on_loop_url_times_out_instead_of_hearing_itself() -> None:
    # A loopback echoes our own HELLO; a request is never an answer, so this must time out.
    with BridgeClient.open("loop://", timeout=0.1, retries=1) as client:
        start = time.monotonic()
        with pytest.raises(BridgeTimeoutError, match="HELLO"):
            client.connect()
        assert time.monotonic() - start < 1.0


def test_bad_url_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="cannot open"):
        SerialTransport("/dev/does-not-exist-edgeadapt")


def test_null_modem_is_bidirectional_and_can_be_cut() -> None:
    a, b = null_modem_pair(poll=0.005)
    a.write(b"ping")
    assert b.read() == b"ping"
    b.write(b"pong")
    assert a.read() == b"pong"
    a.cut_off = True
    a.write(b"lost")
    assert b.read() == b""


class _SocketEnd:
    """The device side of a TCP connection, as a transport."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        conn.settimeout(0.01)

    def write(self, data: bytes) -> None:
        self.conn.sendall(data)

    def read(self, max_bytes: int = 4096) -> bytes:
        try:
            return self.conn.recv(max_bytes)
        except (TimeoutError, OSError):
            return b""

    def close(self) -> None:
        self.conn.close()


def test_client_over_socket_url() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    devices: list[FakeDevice] = []

    def accept() -> None:
        conn, _ = server.accept()
        devices.append(FakeDevice(_SocketEnd(conn), infer=lambda d: d.upper()).start())

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with BridgeClient.open(f"socket://127.0.0.1:{port}", timeout=1.0) as client:
            assert client.connect().profile == "fake"
            assert client.infer(b"tcp").output == b"TCP"
    finally:
        thread.join(timeout=2)
        for dev in devices:
            dev.stop()
        server.close()


def test_traffic_log_to_file_and_logger(bridge, caplog: pytest.LogCaptureFixture) -> None:
    text = io.StringIO()
    client, _ = bridge(traffic_log=text)
    client.connect()
    dump = text.getvalue()
    assert "TX " in dump and "RX " in dump
    assert "ea 02 01" in dump  # header of our HELLO: magic, version, type

    logger = logging.getLogger("bridge-traffic-test")
    client, _ = bridge(traffic_log=logger)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        client.connect()
    assert any(r.message.startswith("RX ") for r in caplog.records)
    assert isinstance(client.link.transport, LoggingTransport)

    later = io.StringIO()  # on demand, and off again
    client.set_traffic_log(later)
    client.stats()
    client.set_traffic_log(None)
    client.stats()
    assert later.getvalue().count("TX ") == 1
    assert not isinstance(client.link.transport, LoggingTransport)
