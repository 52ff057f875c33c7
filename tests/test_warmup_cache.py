"""The warm-up cache: a repeated warm-up is read back bit-exact (adapter state, reset point),
also by a process whose global RNG differs, and the caller's RNG is left as it was; anything
that changes the warm-up misses, a damaged entry is rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_setup_data import source_folder

import edgeadapt
from edgeadapt.api import prepare_adapter
from edgeadapt.models import create_model


@pytest.fixture(autouse=True)
def installed_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEADAPT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("EDGEADAPT_CACHE", str(tmp_path / "cache"))


def _warmed(folder: Path, cache: Path, *, steps: int = 2, seed: int = 0, lines=None,
            global_seed: int = 0, **config):  # fmt: skip
    torch.manual_seed(0)  # the same model every time (tiny_resnet has no checkpoint)
    model = create_model("tiny_resnet")
    example = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    adapter = edgeadapt.wrap(model, edgeadapt.EcoTTAConfig(**config), example_input=example)
    torch.manual_seed(global_seed)  # torch seeds a new process at random; this stands for it
    record = prepare_adapter(
        adapter, folder, warmup_steps=steps, input_size=(16, 16), progress=False, seed=seed,
        log=(lines.append if lines is not None else None), warmup_cache=cache,
    )  # fmt: skip
    return adapter, record, torch.get_rng_state()


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_repeated_warm_up_is_read_back_bit_exact(tmp_path):
    folder, cache = source_folder(tmp_path / "source"), tmp_path / "warmups"
    first, record, rng = _warmed(folder, cache)
    assert len(list(cache.glob("*.pt"))) == 1
    lines: list[str] = []
    again, record2, rng2 = _warmed(folder, cache, lines=lines)
    assert any("from the cache" in line for line in lines)
    assert record2 == record and torch.equal(rng2, rng)
    assert _same_state(first, again)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first(x), again(x))  # and they adapt alike from there
    first.reset(), again.reset()  # the reset point is the warmed-up state in both
    assert _same_state(first, again)
    fresh, _, _ = _warmed(folder, None)
    assert _same_state(first, fresh)  # a hit equals no cache at all
    # Another adaptation lr and optimiser: the warm-up is the same, and so is the entry.
    lines.clear()
    sgd, _, _ = _warmed(folder, cache, lines=lines, optimizer="sgd", lr=1e-4)
    assert any("from the cache" in line for line in lines)
    assert _same_state(sgd, _warmed(folder, None, optimizer="sgd", lr=1e-4)[0])


def test_a_process_with_another_global_rng_finds_the_entry_and_keeps_its_rng(tmp_path):
    folder, cache = source_folder(tmp_path / "source"), tmp_path / "warmups"
    first, _, _ = _warmed(folder, cache, global_seed=1)
    lines: list[str] = []
    again, _, rng_after = _warmed(folder, cache, lines=lines, global_seed=2)
    assert any("from the cache" in line for line in lines)
    assert len(list(cache.glob("*.pt"))) == 1 and _same_state(first, again)
    torch.manual_seed(2)
    assert torch.equal(rng_after, torch.get_rng_state())  # a hit draws nothing
    fresh, _, rng_fresh = _warmed(folder, None, global_seed=2)
    assert _same_state(first, fresh) and torch.equal(rng_fresh, rng_after)  # nor a warm-up


def test_a_different_warm_up_misses_and_a_damaged_entry_is_rebuilt(tmp_path):
    folder, cache = source_folder(tmp_path / "source"), tmp_path / "warmups"
    _warmed(folder, cache)
    _warmed(folder, cache, steps=3)
    _warmed(folder, cache, seed=1)
    _warmed(folder, cache, frozen_bn="eval")  # a field the warm-up reads
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 4
    for entry in entries:
        entry.write_bytes(b"not a torch file")
    lines: list[str] = []
    adapter, _, _ = _warmed(folder, cache, lines=lines)
    assert not any("from the cache" in line for line in lines)
    fresh, _, _ = _warmed(folder, None)
    assert _same_state(adapter, fresh)


def test_bench_refuses_a_cache_under_a_file(tmp_path, capsys):
    from edgeadapt.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["bench", "--checkpoint", str(tmp_path / "none.pt"), "--methods", "ecotta",
                 "--warmup-cache", str(blocker / "cache")])  # fmt: skip
    assert code == 2 and "--warmup-cache" in capsys.readouterr().err
