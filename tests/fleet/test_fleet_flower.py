"""The fleet on Flower: the simulation engine end to end, and the bytes it reports."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from fleet._tiny import BATCH, tiny_fleet

from edgeadapt.fleet import FleetConfig, run_isolated, shared_state

if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
    pytest.skip(
        'Flower (flwr[simulation]) is not installed: pip install "edgeadapt[fleet]"',
        allow_module_level=True,
    )

DEVICES, ROUNDS, STEPS = 3, 2, 1


@pytest.fixture(scope="module")
def fleet():
    return tiny_fleet()


@pytest.fixture(scope="module")
def simulated(fleet):
    from edgeadapt.fleet import simulate

    config = FleetConfig(devices=DEVICES, rounds=ROUNDS, steps_per_round=STEPS)
    return simulate(fleet, config, progress=False)


def test_the_simulation_runs_every_device_every_round(simulated):
    assert simulated.mode == "fleet-fedavg"
    assert len(simulated.rounds) == ROUNDS
    for k, devices in enumerate(simulated.rounds, 1):
        assert [d.device for d in devices] == list(range(DEVICES))
        assert all(d.round == k and d.steps == STEPS for d in devices)
        assert all(d.samples == STEPS * BATCH and d.errors is not None for d in devices)


def test_round_one_is_each_device_alone(fleet, simulated):
    # Nothing is merged before round 1: its errors are those of isolated adaptation.
    alone = run_isolated(fleet, DEVICES, 1, STEPS, progress=False)
    assert [d.errors for d in alone.rounds[0]] == [d.errors for d in simulated.rounds[0]]


def test_bytes_reported_are_the_payload_flower_carries(fleet, simulated):
    from flwr.common import ndarray_to_bytes

    payload = shared_state(fleet(0).adapter)
    size = sum(len(ndarray_to_bytes(t.numpy())) for t in payload.values())
    raw = sum(t.numel() * t.element_size() for t in payload.values())
    assert raw < size < raw + 200 * len(payload)  # numpy's .npy header per tensor
    for devices in simulated.rounds:
        assert all(d.bytes_received == size for d in devices)
    assert all(d.bytes_sent == 0 for d in simulated.rounds[0])  # nothing to merge yet
    assert all(d.bytes_sent == size for d in simulated.rounds[1])
    assert simulated.bytes_per_device()[1] == {"sent": size, "received": size}


def test_a_device_merges_the_aggregate_before_it_adapts(fleet):
    from edgeadapt.fleet.flower import make_client
    from edgeadapt.fleet.payload import merge_shared_state, state_to_arrays

    other = fleet(1)
    other.adapt(2)
    aggregate = shared_state(other.adapter)
    config = {"round": 2, "steps": 1, "merge": "interpolate", "merge_factor": 0.5}
    client = make_client(fleet, 0, run_key="merge-test")
    arrays, samples, metrics = client.fit(state_to_arrays(aggregate), config)
    expected = fleet(0)  # what the client should have done, by hand
    merge_shared_state(expected.adapter, aggregate, merge="interpolate", factor=0.5)
    expected.adapt(1)
    want = shared_state(expected.adapter)
    assert samples == BATCH and metrics["device"] == 0
    assert len(arrays) == len(want)
    assert all(
        torch.allclose(torch.from_numpy(a), w) for a, w in zip(arrays, want.values(), strict=True)
    )


def test_real_server_and_clients_over_grpc():
    import json
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).with_name("_deploy.py")
    done = subprocess.run(
        [sys.executable, str(script), f"127.0.0.1:{port}", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    rounds = out["result"]["rounds"]
    assert [[d["device"] for d in r] for r in rounds] == [[0, 1], [0, 1]]
    assert all(d["bytes_received"] > 0 for r in rounds for d in r)
    assert [d["bytes_sent"] for d in rounds[1]] == [d["bytes_received"] for d in rounds[0]]
    assert out["steps"] == {"0": [1, 1], "1": [1, 1]}


def test_a_server_nobody_joins_gives_up_after_its_timeout():
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("_deploy.py")
    done = subprocess.run(
        [sys.executable, str(script), "127.0.0.1:0", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "0 of 1 devices joined" in json.loads(done.stdout.strip().splitlines()[-1])["error"]


def test_a_client_walks_on_through_its_stream_from_round_to_round(fleet):
    from types import SimpleNamespace

    from edgeadapt.fleet import flower_client
    from edgeadapt.fleet.flower import make_client

    def fit(client, round_):
        return client.fit([], {"round": round_, "steps": 1})

    # A real device: one process, no node context.
    client = make_client(fleet, 0, run_key="walk-real")
    fit(client, 1), fit(client, 2)
    assert flower_client._DEVICES[("walk-real", 0)][0].position == 2
    # A simulated one that moves to another worker (another process: another cache key)
    # after round 1 resumes from the state in its node context.
    context = SimpleNamespace(state=SimpleNamespace(config_records={}))
    fit(make_client(fleet, 1, context=context, run_key="worker-a"), 1)
    arrays, _, _ = fit(make_client(fleet, 1, context=context, run_key="worker-b"), 2)
    assert flower_client._DEVICES[("worker-b", 1)][0].position == 2
    same = fleet(1)  # the same two batches in one process
    same.adapt(1), same.adapt(1)
    assert all(
        torch.equal(torch.from_numpy(a), w)
        for a, w in zip(arrays, shared_state(same.adapter).values(), strict=True)
    )


def test_matched_statistics_hand_a_changed_device_what_another_learnt_there():
    # Stream seed 1: devices 0 and 1 see clean images then contrast, device 2 the reverse.
    # Round 2 (input held still) fills the bank with one entry per input; in round 3 every
    # device moves to the input another has been on, so each is handed that entry in round 4.
    import dataclasses

    from edgeadapt.fleet import simulate

    fleet = dataclasses.replace(tiny_fleet(corruptions=("none", "contrast"), severity=5), seed=1)
    assert [fleet.stream_plan(i)[0][0] for i in range(3)] == ["none", "none", "contrast"]
    config = FleetConfig(devices=3, rounds=4, steps_per_round=1, stream_statistics="matched",
                         share_statistics=False, match_threshold=0.5)  # fmt: skip
    result = simulate(fleet, config, progress=False)
    assert result.mode == "fleet-fedavg-matched"
    assert result.settings == {"bank_entries": 2, "bank_handouts": 3}
    first, stable = result.rounds[0][0].bytes_received, result.rounds[1][0].bytes_received
    assert stable > first  # a stable device uploads its statistics beside the signature
    plain = result.rounds[1][0].bytes_sent  # the aggregate alone
    assert all(d.bytes_sent > plain for d in result.rounds[3])  # aggregate + an entry
    assert all(d.bytes_sent == plain for d in result.rounds[2])
