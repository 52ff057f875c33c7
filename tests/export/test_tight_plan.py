"""The tight memory plan of scheduled training programs (the default): banks that follow each
other in the address map planned as one region, and each tensor at its own offset where that
beats shared slots."""

from __future__ import annotations

import itertools

import pytest
import torch
from tiny_training import X, made_up_mcu, tiny_ecotta

from edgeadapt.export import TrainingRunner, check_fit, load_profile, to_training_program
from edgeadapt.export.memory_plan import plan_banks
from edgeadapt.export.tensor_offsets import offset_plan


class _Spec:
    """What offset_plan reads of an ExecuTorch TensorSpec."""

    def __init__(self, start, end, size, base=None, base_offset=0):
        self.lifetime, self.size = [start, end], size
        self.storage_base, self.storage_base_offset = base, base_offset
        self.alignment = 1

    def realign(self, alignment):
        self.alignment = alignment
        return self.allocated_memory

    @property
    def allocated_memory(self):
        return (self.size + self.alignment - 1) // self.alignment * self.alignment


def _clashes(specs, placement):
    """Pairs alive at the same time whose bytes overlap (storage-backed pairs excepted)."""
    bad = []
    for a, b in itertools.combinations([s for s in specs if s.storage_base is None], 2):
        (ba, _, oa), (bb, _, ob) = placement[a], placement[b]
        live = a.lifetime[0] <= b.lifetime[1] and b.lifetime[0] <= a.lifetime[1]
        overlap = oa < ob + b.allocated_memory and ob < oa + a.allocated_memory
        if ba == bb and live and overlap:
            bad.append((a.lifetime, b.lifetime))
    return bad


def test_offsets_never_overlap_live_tensors_and_need_only_the_peak():
    """A 64-byte map, then two 32-byte ones alive together, then a 48- and a 16-byte one:
    64 bytes alive at every step. Whole slots (each as large as its largest tenant: 64 for
    the first map, the 48 and a 32; 32 for the other 32 and the 16) would need 96; offsets
    need the 64. A tensor written over another takes its base's place."""
    big = _Spec(0, 2, 64)
    specs = [big, _Spec(3, 5, 32), _Spec(3, 5, 32), _Spec(6, 8, 48), _Spec(6, 8, 16)]
    specs.append(_Spec(1, 2, 16, big, 16))
    used, placement = offset_plan(specs, [1 << 20], 16)
    assert _clashes(specs, placement) == []
    assert used == [64]
    assert placement[specs[-1]] == (0, None, placement[big][2] + 16)
    assert all(obj is None for _, obj, _ in placement.values())


def test_offsets_go_to_the_next_bank_and_report_overflow_where_it_is_least():
    specs = [_Spec(0, 5, 40), _Spec(0, 5, 40), _Spec(0, 5, 8)]
    used, placement = offset_plan(specs, [48, 48], 8)
    assert _clashes(specs, placement) == [] and used == [48, 40]  # the 8 beside a 40
    used, _ = offset_plan([_Spec(0, 1, 100)], [48, 64], 8)
    assert used == [0, 104]  # fits neither: the bank it overflows least


def test_contiguous_banks_merge_and_others_do_not():
    f746 = plan_banks(load_profile("stm32f746"), merge_contiguous=True)
    assert [(b.name, b.capacity) for b in f746] == [("DTCM+SRAM1+SRAM2", 320 * 1024)]
    assert [b.name for b in plan_banks(load_profile("stm32f746"))] == ["SRAM1", "DTCM", "SRAM2"]
    h743 = plan_banks(load_profile("stm32h743"), merge_contiguous=True)
    assert [b.name for b in h743] == ["AXI SRAM", "SRAM1+SRAM2+SRAM3", "DTCM", "SRAM4"]
    board = plan_banks(load_profile("stm32f746g_disco"), merge_contiguous=True)
    assert [(b.name, b.external) for b in board] == [("DTCM+SRAM1+SRAM2", False), ("SDRAM", True)]


def test_banks_with_reserved_bytes_or_no_address_stay_apart(tmp_path):
    profile = made_up_mcu(
        tmp_path, [("A", 100, 0x1000, 0), ("B", 100, 0x1064, 10), ("C", 100, None, 0)]
    )
    assert len(plan_banks(profile, merge_contiguous=True)) == 3


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """The tiny int8 EcoTTA step scheduled, without a device and for two contiguous banks
    that hold it only together (its arena is ~40 kB; each bank 24 kB)."""
    folder = tmp_path_factory.mktemp("tight")
    profile = made_up_mcu(folder, [("LOW", 24_000, 0x20000000, 0), ("HIGH", 24_000, 0x20005DC0, 0)])
    common = dict(quantize="int8", schedule=True)
    free = to_training_program(tiny_ecotta(), X, folder / "free.pte", **common)
    tight = to_training_program(tiny_ecotta(), X, folder / "tight.pte", device=profile, **common)
    return profile, free, tight


def test_a_tight_plan_is_one_region_and_the_same_step(plans):
    profile, free, tight = plans
    assert tight.arena_banks == ("LOW+HIGH",) and len(tight.arena_bytes) == 1
    assert max(b.bytes for b in profile.ram) < tight.total_arena_bytes <= 48_000
    assert tight.total_arena_bytes < free.total_arena_bytes  # ExecuTorch's own greedy slots
    fit = check_fit(tight, profile, include_runtime=False)
    assert fit.fits and {p.where for p in fit.placements} == {"LOW+HIGH", "flash"}, fit.message
    # Laid out differently, stepped identically: no live tensor shares bytes with another.
    runners = [TrainingRunner(r.path, lr=5e-2) for r in (free, tight)]
    frames = torch.randn(4, 1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    first = None
    for x in frames:
        (la, loss_a, _), (lb, loss_b, _) = (r.step(x) for r in runners)
        assert torch.equal(la, lb) and loss_a == loss_b
        first = first or runners[1].parameters()  # the runtime exposes them after a run
    got, want = (r.parameters() for r in runners)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert any(not torch.equal(got[k], v) for k, v in first.items())  # the weights moved


def test_resnet20_step_of_the_small_sram_configuration_fits_the_stm32f746(tmp_path):
    """EcoTTAConfig.device_small() with int8 kept activations fits the part's 320 KB by the fit
    check (benchmarks/firmware/small_sram/results.md runs it there). Random weights: the
    sizes do not depend on them."""
    from edgeadapt import EcoTTAConfig, wrap
    from edgeadapt.models import create_model

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    adapter = wrap(create_model("resnet20"), EcoTTAConfig.device_small(), example_input=x)
    assert adapter.part_names == ["layer2.0", "layer3.0"]
    report = to_training_program(
        adapter, x, tmp_path / "small.pte", device="stm32f746", int8_activations=True
    )
    fit = check_fit(report, "stm32f746")
    assert fit.fits, fit.message
    # Stage 1's maps are the forward's: nothing of them is kept for the backward.
    peak = report.arena_peak
    assert peak["forward_peak_bytes"] == peak["peak_live_bytes"]
    assert peak["by_role"]["kept activations"] < 4096
