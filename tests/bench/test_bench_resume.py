"""A long benchmark survives an interruption: adapter resume state and the per-segment
progress file, on a tiny model and random images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from tiny import ADAPTING, TEST_OVERRIDES, tiny_config

from edgeadapt import wrap
from edgeadapt.bench import GeneratedSource, make_protocol, run_benchmark
from edgeadapt.data import to_tensor
from edgeadapt.errors import CheckpointMismatchError
from edgeadapt.models import create_model


def _batches(n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(8, 3, 16, 16, generator=gen) for _ in range(n)]


def _wrap(method: str, **extra):
    torch.manual_seed(0)
    model = create_model("tiny_resnet")
    return model, wrap(model, tiny_config(method, **extra))


def _through_a_file(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("method", ADAPTING)
def test_resumed_adapter_goes_on_exactly(method):
    batches = _batches(4)
    model, straight = _wrap(method)
    for x in batches:
        straight(x)

    _, first = _wrap(method)
    for x in batches[:2]:
        first(x)
    saved = _through_a_file(first.resume_state())
    second = wrap(model, tiny_config(method))  # a new process: fresh adapter, same setup
    second.load_resume_state(saved)
    outputs = [second(x) for x in batches[2:]]

    for k, v in straight.state_dict().items():
        assert torch.equal(second.state_dict()[k], v), k
    assert second.steps_taken == straight.steps_taken == 4
    with straight.frozen(), second.frozen():
        assert torch.equal(straight(batches[0]), second(batches[0]))
    # The reset point travelled too: both go back to the same wrap-time state.
    straight.reset()
    second.reset()
    for k, v in straight.state_dict().items():
        assert torch.equal(second.state_dict()[k], v), k
    # And it mattered: without the saved state the last steps give other outputs.
    _, fresh = _wrap(method)
    assert not all(torch.equal(fresh(x), y) for x, y in zip(batches[2:], outputs))


def test_resume_state_of_another_config_is_refused_and_changes_nothing():
    _, adapter = _wrap("tent")
    adapter(_batches(1)[0])
    _, other = _wrap("tent", lr=0.5)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="config"):
        other.load_resume_state(adapter.resume_state())
    assert all(torch.equal(other.state_dict()[k], v) for k, v in before.items())
    _, ecotta = _wrap("ecotta")
    with pytest.raises(CheckpointMismatchError, match="'tent' adapter"):
        ecotta.load_resume_state(adapter.resume_state())


def test_resume_state_leaves_the_frozen_model_out_and_checks_it_on_load():
    batches = _batches(3)
    model, straight = _wrap("ecotta")
    for x in batches:
        straight(x)
    _, first = _wrap("ecotta")
    first(batches[0])
    saved = _through_a_file(first.resume_state())
    frozen = {k for k, v in first.named_parameters() if not v.requires_grad}
    assert frozen and frozen <= set(saved["omitted"])
    assert not frozen & set(saved["state"]) and not frozen & set(saved["reset_point"]["state"])
    meta = {k for k, v in first.named_parameters() if v.requires_grad}
    assert meta <= set(saved["state"])  # what adaptation built stays in the file

    # An adapter whose frozen tensors are not the ones left out is refused, unchanged.
    odd = wrap(model, tiny_config("ecotta"))
    name = sorted(frozen)[0]
    with torch.no_grad():
        odd.get_parameter(name).add_(1.0)
    before = {k: v.clone() for k, v in odd.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="leaves out"):
        odd.load_resume_state(saved)
    assert all(torch.equal(odd.state_dict()[k], v) for k, v in before.items())

    # A file from before tensors were left out (everything in it) still resumes exactly.
    full = {**saved, "state": {k: v.clone() for k, v in first.state_dict().items()}}
    full["reset_point"] = {**saved["reset_point"], "state": dict(first._reset_point["state"])}
    del full["omitted"]
    second = wrap(model, tiny_config("ecotta"))
    second.load_resume_state(_through_a_file(full))
    for x in batches[1:]:
        second(x)
    for k, v in straight.state_dict().items():
        assert torch.equal(second.state_dict()[k], v), k


class PowerCut(Exception):
    pass


class CutAfter:
    """A data source that fails on its `calls`-th read, as a killed process would stop."""

    def __init__(self, source: GeneratedSource, calls: int) -> None:
        self.source, self.calls = source, calls

    def get(self, corruption: str, severity: int):
        self.calls -= 1
        if self.calls < 0:
            raise PowerCut
        return self.source.get(corruption, severity)


@pytest.fixture
def stream():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8)
    source = GeneratedSource(images, rng.integers(0, 10, 32), seed=0)
    segments = make_protocol("continual", ["gaussian_noise", "fog"], severity=3, rounds=2)
    return source, segments


def _run(source, segments, methods, **kwargs):
    torch.manual_seed(0)
    return run_benchmark(
        create_model("tiny_resnet"), methods, segments, source, order=np.arange(32),
        batch_size=8, to_batch=lambda a: to_tensor(a, normalize=True), progress=False,
        overrides=TEST_OVERRIDES, **kwargs,
    )  # fmt: skip


def test_interrupted_benchmark_resumes_after_the_last_saved_segment(stream, tmp_path):
    source, segments = stream
    methods = ["tent", "ecotta"]
    straight = _run(source, segments, methods, log=lambda _: None)
    # The first read gives the example input; reads 2-4 are tent's first three segments.
    with pytest.raises(PowerCut):
        _run(CutAfter(source, 4), segments, methods, state_dir=tmp_path, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tent.pt"]
    said: list[str] = []
    resumed = _run(source, segments, methods, state_dir=tmp_path, log=said.append)
    assert any("after 3 of 4 segments" in line for line in said)
    for a, b in zip(straight, resumed, strict=True):
        assert [s.errors for s in a.segments] == [s.errors for s in b.segments]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ecotta.pt", "tent.pt"]


def test_progress_file_of_another_stream_is_refused(stream, tmp_path):
    source, segments = stream
    _run(source, segments, ["tent"], state_dir=tmp_path, log=lambda _: None)
    with pytest.raises(CheckpointMismatchError, match="another stream"):
        _run(source, segments[:3], ["tent"], state_dir=tmp_path, log=lambda _: None)
    (tmp_path / "tent.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointMismatchError, match="delete it"):
        _run(source, segments, ["tent"], state_dir=tmp_path, log=lambda _: None)
