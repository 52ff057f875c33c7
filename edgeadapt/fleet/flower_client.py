"""The device side on Flower: a `NumPyClient` around a `FleetDevice`, and `connect`, which runs
one against a fleet server over the network (Flower's `start_client`, gRPC)."""

from __future__ import annotations

import socket
import time
import uuid

from edgeadapt.fleet._extra import quiet_flower
from edgeadapt.fleet._extra import require_fleet as require
from edgeadapt.fleet.config import FleetConnectionError
from edgeadapt.fleet.device import DeviceFactory, FleetDevice, RoundStats
from edgeadapt.fleet.payload import (
    layout_digest,
    merge_shared_state,
    shared_state,
    state_from_arrays,
    state_to_arrays,
)
from edgeadapt.fleet.statistics_bank import (
    InputSignature,
    load_stream_statistics,
    signature_distance,
    stream_statistics,
    stream_statistics_keys,
)

__all__ = ["connect", "make_client", "split_address", "wait_for_server"]

# Devices a process holds, by (run, device): in the simulation one process adapts many devices
# in turn, and rebuilding each from its saved state every round would be wasted work.
_DEVICES: dict[tuple[str, int], tuple[FleetDevice, int]] = {}
_STATE = "edgeadapt-device"  # the record in a simulated node's context.state
# A device's input this round against its last (statistics matching): no last round to
# compare with, the same input (its statistics go to the bank), or a new input (it asks).
INPUT_FIRST, INPUT_STABLE, INPUT_CHANGED = 0, 1, 2


def make_client(factory: DeviceFactory, device_id: int, *, context=None, run_key: str = ""):
    """A Flower NumPyClient for device `device_id` (built by `factory` on first use). With a
    simulation `context`, the device's state is kept in `context.state` between rounds."""
    require("flwr", "the fleet client")
    from flwr.client import NumPyClient

    class FleetClient(NumPyClient):
        def __init__(self) -> None:
            self.history: list[RoundStats] = []

        def _device(self) -> FleetDevice:
            """This device as its last round left it. A real device (no context) is this
            process. In a simulation the device may have run its last round in another
            worker: the round number in its node context says whether this process's copy
            is current, and if not it is rebuilt from the state saved there."""
            key = (run_key, device_id)
            cached = _DEVICES.get(key)
            saved = None
            if context is not None and _STATE in context.state.config_records:
                saved = context.state.config_records[_STATE]
            if cached is not None and (
                context is None or saved is None or cached[1] == int(saved["round"])
            ):
                return cached[0]
            device = factory(device_id)
            if saved is not None:
                device.load_state_bytes(bytes(saved["state"]))
            _DEVICES[key] = (device, int(saved["round"]) if saved is not None else 0)
            return device

        def get_parameters(self, config):
            return state_to_arrays(shared_state(self._device().adapter))

        def fit(self, parameters, config):
            device = self._device()
            statistics = bool(config.get("share_statistics", True))
            mine = shared_state(device.adapter, statistics=statistics)
            matched = config.get("stream_statistics", "local") == "matched"
            stream_keys = matching_keys(device.adapter, mine) if matched else []
            if parameters:  # the fleet's aggregate of the last round
                merge_shared_state(
                    device.adapter, state_from_arrays(list(mine), parameters[: len(mine)]),
                    merge=str(config.get("merge", "replace")),
                    factor=float(config.get("merge_factor", 0.5)), statistics=statistics,
                )  # fmt: skip
            if parameters and len(parameters) > len(mine):  # the bank's statistics for us
                load_stream_statistics(
                    device.adapter, state_from_arrays(stream_keys, parameters[len(mine) :])
                )
            signature = InputSignature(device.adapter) if matched else None
            try:
                stats = device.adapt(int(config["steps"]))
            finally:
                if signature is not None:
                    signature.remove()
            self.history.append(stats)
            state = shared_state(device.adapter, statistics=statistics)
            extra, input_state = [], INPUT_FIRST
            if signature is not None:
                extra, input_state = _signature_upload(
                    device, signature, stream_keys, float(config["match_threshold"])
                )
            round_ = int(config["round"])
            _DEVICES[(run_key, device_id)] = (device, round_)
            if context is not None:
                from flwr.app import ConfigRecord

                record = {"round": round_, "state": device.state_bytes()}
                context.state.config_records[_STATE] = ConfigRecord(record)
            metrics = {
                "device": device_id,
                "steps": stats.steps,
                "errors": -1 if stats.errors is None else stats.errors,
                "layout": layout_digest(state),
                "shared": len(state),
                "input": input_state,
            }
            return state_to_arrays(state) + extra, stats.samples, metrics

    return FleetClient()


def matching_keys(adapter, shared: dict) -> list[str]:
    """The stream statistics a device matches with the fleet: every BN's, less those the
    fleet already averages."""
    return stream_statistics_keys(adapter, exclude=set(shared))


def _signature_upload(device: FleetDevice, signature: InputSignature, keys: list[str],
                      threshold: float) -> tuple[list, int]:  # fmt: skip
    """What a device adds to its upload under statistics matching: this round's input
    signature, and its stream statistics when its input held still since the last round."""
    now = signature.take()
    last, device.last_signature = device.last_signature, now
    if now is None:
        return [], INPUT_FIRST
    if last is None:
        return [now.numpy()], INPUT_FIRST
    if signature_distance(now, last) < threshold:
        statistics = state_to_arrays(stream_statistics(device.adapter, keys))
        return [now.numpy(), *statistics], INPUT_STABLE
    return [now.numpy()], INPUT_CHANGED


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise FleetConnectionError(
            f"server address {address!r} is not HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)"
        )
    return host.strip("[]") or "0.0.0.0", int(port)


def wait_for_server(address: str, timeout: float) -> None:
    """Return once a TCP connection to `address` opens; FleetConnectionError after `timeout`
    seconds of trying (Flower's gRPC client alone would retry for ever)."""
    host, port = split_address(address)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(min(left, 5.0), 0.1)):
                return
        except OSError as exc:
            if time.monotonic() + 0.5 > deadline:
                raise FleetConnectionError(
                    f"no fleet server at {address} after {timeout:g} s ({exc}); start one with "
                    "`edgeadapt fleet server --server-address HOST:PORT`, or check the address "
                    "and the firewall"
                ) from exc
            time.sleep(0.5)


def connect(
    factory: DeviceFactory,
    device_id: int,
    server_address: str,
    *,
    timeout: float = 30.0,
    verbose: bool = False,
) -> list[RoundStats]:
    """Run device `device_id` against a fleet server at `server_address` until the server ends
    the run; returns what the device did each round. The server must be reachable within
    `timeout` seconds (else FleetConnectionError)."""
    require("flwr", "fleet client")
    from flwr.client import start_client

    wait_for_server(server_address, timeout)
    client = make_client(factory, device_id, run_key=f"remote-{uuid.uuid4().hex}")
    with quiet_flower(not verbose):
        try:
            start_client(
                server_address=server_address, client=client.to_client(), insecure=True,
                max_wait_time=timeout,
            )  # fmt: skip
        except Exception as exc:
            if type(exc).__module__.startswith("grpc"):  # the connection broke
                raise FleetConnectionError(
                    f"lost the fleet server at {server_address}: {exc}"
                ) from exc
            raise
    return client.history
