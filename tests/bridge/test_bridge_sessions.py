"""Session identity: HELLO gives a boot id and a session, every request names its session,
a reboot is detected (and re-handshaken) by the host, and a header version other than the
negotiated one is refused without running the request."""

from __future__ import annotations

import pytest

from edgeadapt.firmware_bridge import (
    DeviceRestartedError,
    ErrorCode,
    FakeDevice,
    SessionLostError,
    null_modem_pair,
)
from edgeadapt.firmware_bridge import messages as m
from edgeadapt.firmware_bridge.client import BridgeClient


def test_header_version_other_than_negotiated_is_refused(bridge) -> None:
    client, fake = bridge(device={"infer": bytes})
    client.connect()
    link = client.link
    link.send(m.Infer(1, b"x"), link.next_seq(), version=7)
    replies = []
    link.wait_other(replies.append, what="the refusal")
    assert replies[0].msg_type == m.ErrorReport.TYPE
    err = m.ErrorReport.unpack(replies[0].payload)
    assert (err.code, err.arg) == (ErrorCode.UNSUPPORTED_VERSION, 2)
    assert fake.counts["infer_count"] == 0  # not executed


def test_device_info_carries_boot_and_session(bridge) -> None:
    client, fake = bridge()
    first = client.connect()
    again = client.connect()
    assert first.boot_id == again.boot_id == fake.boot_id != 0
    assert 0 != first.session != again.session  # each HELLO opens a new session
    assert client.link.session == again.session


def test_reboot_is_detected_and_the_host_handshakes_again(bridge) -> None:
    client, fake = bridge(max_payload=512, device={"infer": bytes, "max_payload": 1024})
    before = client.connect()
    fake.reboot()  # power cycle: session, negotiated size and RAM state gone
    with pytest.raises(DeviceRestartedError) as err:
        client.infer(b"after the reboot")
    assert err.value.rebooted and "restarted" in str(err.value)
    assert fake.counts["infer_count"] == 0  # the device refused it: nothing ran
    assert client.info.boot_id == fake.boot_id != before.boot_id  # handshaken again
    assert client.link.max_payload == 512 and fake.negotiated == 512
    assert client.infer(b"now it runs").output == b"now it runs"


def test_another_host_taking_over_is_a_session_change_not_a_reboot(bridge) -> None:
    client, fake = bridge(device={"infer": bytes})
    client.connect()
    other = BridgeClient(client.link.transport, timeout=0.2)
    other.connect()  # a second program said HELLO on the same port
    # The first client's request is refused (another session), it reconnects and retries.
    assert client.infer(b"mine").output == b"mine"
    assert client.link.counters["session_changes"] == 1
    assert fake.counts["infer_count"] == 1


def test_request_without_hello_is_refused_by_the_device() -> None:
    host_end, dev_end = null_modem_pair(poll=0.005)
    with FakeDevice(dev_end, infer=bytes) as fake:
        client = BridgeClient(host_end, timeout=0.2)
        # Bypass the client's automatic HELLO: a raw request on a device with no session.
        with pytest.raises(SessionLostError):
            client.link.request(m.Infer(0, b"x"), m.InferResult)
        assert fake.counts["infer_count"] == 0


def test_non_idempotent_request_after_reboot_is_not_silently_retried(bridge) -> None:
    client, fake = bridge(device={"adapt": lambda d: (0.1, d)})
    client.connect()
    client.adapt(b"a")
    fake.reboot()
    with pytest.raises(DeviceRestartedError):
        client.adapt(b"b")
    assert fake.counts["adapt_steps"] == 0  # counters restart with the device
    assert client.adapt(b"b").step == 1
