"""The fleet without Flower: aggregation math, what a device shares, merging, resuming, and
the CLI's refusals of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fleet._tiny import BATCH, tiny_fleet

from edgeadapt import cli
from edgeadapt.errors import CheckpointMismatchError, ConfigError
from edgeadapt.fleet import (
    DeviceRound,
    FleetConfig,
    FleetResult,
    aggregate,
    devices_table,
    merge_shared_state,
    run_isolated,
    shared_state,
    shared_state_keys,
)
from edgeadapt.modules.meta import MetaPart


def _u(values, n):
    return ({"w": torch.tensor(values, dtype=torch.float32), "count": torch.tensor(n)}, n)


def test_fedavg_weights_devices_by_samples_adapted():
    out = aggregate("fedavg", [_u([0.0, 0.0], 1), _u([4.0, 8.0], 3)])
    assert torch.allclose(out["w"], torch.tensor([3.0, 6.0]))
    assert out["w"].dtype == torch.float32
    assert out["count"].dtype == torch.int64  # counters stay integers (their median)


def test_fedavg_with_no_samples_anywhere_is_the_plain_mean():
    out = aggregate("fedavg", [_u([0.0], 0), _u([2.0], 0)])
    assert torch.allclose(out["w"], torch.tensor([1.0]))


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean"])
def test_robust_strategies_ignore_an_outlier_device(strategy):
    honest = [_u([1.0 + 0.01 * i, -1.0], 10) for i in range(4)]
    outlier = _u([1e6, 1e6], 1000)  # and it claims the most samples
    out = aggregate(strategy, [*honest, outlier], trim=0.2)
    assert torch.allclose(out["w"], torch.tensor([1.015, -1.0]), atol=0.02)
    assert aggregate("fedavg", [*honest, outlier])["w"][0] > 1e5  # FedAvg does not


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    out = aggregate("median", [_u([v], 1) for v in (1.0, 2.0, 3.0, 100.0)])
    assert torch.allclose(out["w"], torch.tensor([2.5]))


def test_aggregate_refuses_unknown_strategies_and_mismatched_devices():
    with pytest.raises(ConfigError, match="did you mean 'median'"):
        aggregate("medain", [_u([1.0], 1)])
    with pytest.raises(ConfigError, match="other tensors"):
        aggregate("fedavg", [_u([1.0], 1), _u([1.0, 2.0], 1)])
    with pytest.raises(ConfigError, match="nothing to aggregate"):
        aggregate("fedavg", [])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("devices", 0, "devices .* >= 1"),
        ("rounds", 0, "rounds .* >= 1"),
        ("steps_per_round", 0, "steps_per_round .* >= 1"),
        ("strategy", "fedavgg", "did you mean 'fedavg'"),
        ("merge", "replce", "did you mean 'replace'"),
        ("merge_factor", 0.0, "merge_factor"),
        ("trim", 0.5, "trim"),
    ],
)
def test_fleet_config_refuses_bad_values(field, value, message):
    with pytest.raises(ConfigError, match=message):
        FleetConfig(**{field: value})


@pytest.fixture(scope="module")
def fleet():
    return tiny_fleet()


def test_only_adapter_state_is_shared(fleet):
    device = fleet(0)
    adapter = device.adapter
    payload = shared_state(adapter)
    meta = {
        id(m)
        for part in adapter.model.modules()
        if isinstance(part, MetaPart)
        for net in (part.adapter_bn, part.adapter_conv)
        for m in net.modules()
    }
    owners = {name: m for name, m in adapter.named_modules()}
    for key in payload:  # every tensor belongs to a meta network (found by type)
        assert id(owners[key.rsplit(".", 1)[0]]) in meta, key
    # Nothing of the frozen backbone: not its weights, not its BNs' stream statistics.
    backbone = set(fleet.model.state_dict())
    assert not any(k.removeprefix("model.") in backbone for k in payload)
    assert not any(".frozen." in k for k in payload)
    assert any(k.endswith("running_mean") for k in payload)  # the meta BNs' statistics
    # Nothing shaped like an input.
    x, _ = device.stream.batch(0)
    assert all(t.ndim < 4 or t.shape[0] < x.shape[0] or t.shape[1] != 3 for t in payload.values())
    assert all(t.numel() < x[0].numel() for t in payload.values())
    weights_only = shared_state_keys(adapter, statistics=False)
    assert weights_only and all(adapter.get_parameter(k).requires_grad for k in weights_only)


def test_merge_replace_and_interpolate_touch_only_the_shared_state(fleet):
    a, b = fleet(0), fleet(1)
    b.adapt(2)
    frozen = {k: v.clone() for k, v in a.adapter.model.state_dict().items() if ".frozen." in k}
    mine, theirs = shared_state(a.adapter), shared_state(b.adapter)
    moved = [k for k in mine if mine[k].is_floating_point() and not torch.equal(mine[k], theirs[k])]
    assert moved
    merge_shared_state(a.adapter, theirs, merge="interpolate", factor=0.25)
    now = shared_state(a.adapter)
    for k in moved:
        assert torch.allclose(now[k], mine[k] + 0.25 * (theirs[k] - mine[k]), atol=1e-6)
    merge_shared_state(a.adapter, theirs, merge="replace")
    assert all(torch.equal(shared_state(a.adapter)[k], theirs[k]) for k in theirs)
    after = a.adapter.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        merge_shared_state(a.adapter, {"x": torch.zeros(1)})


def test_a_device_resumes_exactly_from_its_saved_state(fleet):
    a = fleet(2)
    a.adapt(1)
    saved = a.state_bytes()
    b = fleet(2)
    b.load_state_bytes(saved)
    sa, sb = a.adapt(2), b.adapt(2)
    assert (sa.samples, sa.errors) == (sb.samples, sb.errors) == (2 * BATCH, sa.errors)
    assert all(
        torch.equal(shared_state(a.adapter)[k], v) for k, v in shared_state(b.adapter).items()
    )


def test_devices_walk_their_own_streams_and_stop_at_the_end(fleet):
    plans = [fleet.stream_plan(i) for i in range(3)]
    first = plans[0][1][0]  # device 0's first domain: which images, in which order
    assert all(not np.array_equal(first, orders[0]) for _, orders in plans[1:])
    result = run_isolated(fleet, devices=2, rounds=3, steps_per_round=2, progress=False)
    per_round = [sum(d.samples for d in r) for r in result.rounds]
    assert per_round == [2 * 2 * BATCH, 2 * 2 * BATCH, 0]  # 4 batches per device in all
    assert result.round_errors()[2] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fleet", "--devices", "0"], "devices (--devices) must be an int >= 1"),
        (["fleet", "--steps-per-round", "0"], "--steps-per-round) must be an int >= 1"),
        (["fleet", "--rounds", "-1"], "--rounds) must be an int >= 1"),
        (["fleet", "--strategy", "trimmed-mean"], "did you mean 'trimmed_mean'"),
        (["fleet", "server", "--strategy", "fedav"], "did you mean 'fedavg'"),
        (["fleet", "--batch", "32", "--images-per-domain", "16"], "must hold one --batch"),
    ],
)
def test_cli_refuses_bad_input_before_any_work(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_client_gives_up_on_an_unreachable_server(capsys):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    code = cli.main(["fleet", "client", "--server-address", f"127.0.0.1:{port}", "--timeout", "1"])
    assert code == 2 and time.monotonic() - start < 10
    assert "no fleet server at" in capsys.readouterr().err


def test_missing_flower_names_the_fleet_extra(monkeypatch, capsys):
    import sys

    for key in [k for k in sys.modules if k == "flwr" or k.startswith("flwr.")]:
        monkeypatch.setitem(sys.modules, key, None)
    monkeypatch.setitem(sys.modules, "flwr", None)
    assert cli.main(["fleet", "--devices", "2"]) == 2
    err = capsys.readouterr().err
    assert "'fleet' extra" in err and 'pip install "edgeadapt[fleet]"' in err


def _result(mode: str, errors_per_device: dict[int, list[int]], samples: int = 10) -> FleetResult:
    rounds = [
        [DeviceRound(k, r + 1, 1, samples, e[r]) for k, e in errors_per_device.items()]
        for r in range(len(next(iter(errors_per_device.values()))))
    ]
    return FleetResult(mode, rounds)


def test_devices_table_compares_every_device_with_isolated_and_names_the_worst():
    isolated = _result("isolated", {0: [2, 2], 1: [5, 5], 2: [1, 1]})
    fleet = _result("fleet-fedavg", {0: [1, 1], 1: [5, 6], 2: [1, 1]})
    assert isolated.device_errors() == {0: 20.0, 1: 50.0, 2: 10.0}
    table = devices_table([isolated, fleet])
    assert "| 0 | 20.00 | 10.00 | -10.00 |" in table
    assert "| 1 | 50.00 | 55.00 | +5.00 |" in table
    assert "fleet-fedavg: worst device 1 at +5.00 points against isolated; 1 of 3" in table
    assert devices_table([fleet]) == ""  # nothing to compare with
    again = FleetResult.from_dict(fleet.to_dict())  # what run.py --render reads back
    assert again.device_errors() == fleet.device_errors() and again.mode == fleet.mode
