"""Statistics matching: the input signature, the server's bank, and a device taking an entry."""

from __future__ import annotations

import pytest
import torch
from fleet._tiny import BATCH, tiny_fleet
from torch import nn

from edgeadapt.errors import ConfigError
from edgeadapt.fleet import FleetConfig
from edgeadapt.fleet.statistics_bank import (
    BANK_MEMORY,
    InputSignature,
    StatisticsBank,
    signature_distance,
    stream_statistics,
    stream_statistics_keys,
)


def _stats(value: float) -> dict[str, torch.Tensor]:
    return {"bn.running_mean": torch.full((4,), value), "bn.running_var": torch.full((4,), 1.0)}


def test_the_bank_starts_entries_for_new_inputs_and_averages_close_ones():
    bank = StatisticsBank(threshold=0.5)
    assert bank.lookup(torch.zeros(8)) is None  # nothing known yet
    bank.add(torch.zeros(8), _stats(1.0))
    bank.add(torch.full((8,), 0.2), _stats(3.0))  # close: the same entry, mean of the two
    bank.add(torch.full((8,), 5.0), _stats(9.0))  # far: an entry of its own
    assert len(bank.entries) == 2
    near = bank.lookup(torch.full((8,), 0.1))
    assert near is not None and torch.allclose(near["bn.running_mean"], torch.full((4,), 2.0))
    assert torch.allclose(bank.entries[0].signature, torch.full((8,), 0.1, dtype=torch.float64))
    assert bank.lookup(torch.full((8,), 2.5)) is None  # nothing within the threshold


def test_a_bank_entry_follows_its_last_uploads():
    bank = StatisticsBank(threshold=0.5)
    for _ in range(3 * BANK_MEMORY):
        bank.add(torch.zeros(8), _stats(0.0))
    for _ in range(4 * BANK_MEMORY):  # the same input, statistics that moved on
        bank.add(torch.zeros(8), _stats(1.0))
    mean = bank.lookup(torch.zeros(8))["bn.running_mean"]
    assert 0.95 < float(mean[0]) <= 1.0  # a running mean over the recent, not all history


def test_the_bank_refuses_uploads_of_another_layout():
    from edgeadapt.fleet import FleetError

    bank = StatisticsBank(threshold=0.5)
    assert bank.lookup(torch.zeros(3)) is None  # nothing to compare with yet
    bank.add(torch.zeros(8), _stats(1.0))
    wrong = {"bn.running_mean": torch.ones(1), "bn.running_var": torch.ones(4)}
    with pytest.raises(FleetError, match="same model"):
        bank.add(torch.zeros(8), wrong)  # would broadcast into the entry
    with pytest.raises(FleetError, match="same model"):
        bank.lookup(torch.zeros(1))  # would broadcast in the distance
    assert len(bank.entries) == 1 and bank.entries[0].uploads == 1


def _tiny_bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1),
                         nn.BatchNorm2d(4)).eval()  # fmt: skip


def test_the_signature_tells_inputs_apart_and_restarts_each_round():
    model = _tiny_bn_model()
    signature = InputSignature(model)
    assert signature.take() is None  # no frames yet
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(8):
            model(torch.rand(1, 3, 16, 16, generator=gen))
        a = signature.take()
        for _ in range(8):
            model(torch.rand(1, 3, 16, 16, generator=gen))
        b = signature.take()
        for _ in range(8):  # the same scenes at a tenth of the contrast
            model(0.5 + 0.1 * (torch.rand(1, 3, 16, 16, generator=gen) - 0.5))
        c = signature.take()
    assert a.shape == (3 * 3 + 4,)  # 3 numbers per input channel, 1 per first-BN channel
    assert signature_distance(a, b) < 0.1 < 1.0 < signature_distance(a, c)
    signature.remove()
    with torch.no_grad():
        model(torch.rand(1, 3, 16, 16))
    assert signature.take() is None  # the hook is gone


def test_stream_statistics_are_every_bn_less_what_the_fleet_averages():
    model = _tiny_bn_model()
    keys = stream_statistics_keys(model)
    assert keys == ["1.running_mean", "1.running_var", "4.running_mean", "4.running_var"]
    assert stream_statistics_keys(model, exclude={"4.running_mean", "4.running_var"}) == keys[:2]
    assert list(stream_statistics(model, keys)) == keys


def test_a_model_without_batchnorm_is_refused():
    with pytest.raises(ConfigError, match="BatchNorm"):
        InputSignature(nn.Sequential(nn.Conv2d(3, 4, 3)))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("stream_statistics", "shared", "stream_statistics"), ("match_threshold", 0.0, "> 0")],
)
def test_config_refuses_bad_matching_settings(field, value, message):
    with pytest.raises(ConfigError, match=message):
        FleetConfig(**{field: value})


def test_a_device_loads_the_statistics_it_is_handed_and_uploads_its_own_when_stable():
    from edgeadapt.fleet.flower_client import (
        INPUT_FIRST,
        INPUT_STABLE,
        make_client,
        matching_keys,
    )
    from edgeadapt.fleet.payload import shared_state, state_to_arrays

    fleet = tiny_fleet()
    config = {"round": 1, "steps": 1, "stream_statistics": "matched", "match_threshold": 1e9}
    client = make_client(fleet, 0, run_key="bank-test")
    arrays, samples, metrics = client.fit([], config)
    shared = metrics["shared"]
    assert metrics["input"] == INPUT_FIRST and len(arrays) == shared + 1  # + the signature
    # Round 2: the aggregate and statistics from the bank; a huge threshold: "stable".
    device = fleet(0)
    keys = matching_keys(device.adapter, shared_state(device.adapter))
    handed = {
        k: torch.full_like(v, 0.25) for k, v in stream_statistics(device.adapter, keys).items()
    }
    seen = []  # the first BN's variance as the device's first frame of round 2 meets it
    adapter = client._device().adapter
    first_bn = next(m for m in adapter.modules() if isinstance(m, nn.BatchNorm2d))
    hook = first_bn.register_forward_pre_hook(lambda m, _: seen.append(m.running_var.clone()))
    arrays2, _, metrics2 = client.fit(
        arrays[:shared] + state_to_arrays(handed), {**config, "round": 2}
    )
    hook.remove()
    assert torch.equal(seen[0], torch.full_like(seen[0], 0.25))  # loaded before adapting
    assert metrics2["input"] == INPUT_STABLE and len(arrays2) == shared + 1 + len(keys)
    assert samples == BATCH
