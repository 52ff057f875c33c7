"""RoTTA: robust BN, the category-balanced memory bank, updates every k frames from a mean
teacher, and its state (reset, resume, frozen) on a tiny random model."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import edgeadapt.methods.rotta  # noqa: F401  (registers the method)
from edgeadapt.api import config_for, wrap
from edgeadapt.config import RoTTAConfig
from edgeadapt.errors import ConfigError, InputError
from edgeadapt.memory import measure_step_memory
from edgeadapt.methods._memory_bank import MemoryBank
from edgeadapt.methods.rotta import timeliness
from edgeadapt.models import create_model
from edgeadapt.modules.stream_norm import StreamBatchNorm2d

# Small enough that a few frames trigger an update; a teacher that visibly follows.
SETTINGS = {"update_every": 8, "memory_size": 16, "teacher_momentum": 0.9, "lr": 1e-2}


def _adapter(example: bool = True, **extra):
    torch.manual_seed(0)
    model = create_model("tiny_resnet")
    ex = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) if example else None
    return wrap(model, config_for("rotta", **{**SETTINGS, **extra}), example_input=ex)


def _frames(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _state(adapter) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in adapter.state_dict().items()}


def _through_a_file(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ---- the adapter ---------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 4, 16, 64])
def test_runs_at_any_batch_and_updates_every_k_frames(batch):
    adapter = _adapter()
    frames = _frames(64)
    for x in frames.split(batch):
        out = adapter(x)
        assert out.shape == (len(x), 10) and torch.isfinite(out).all()
    # Updates follow the frame count, not the batches: 64 frames, one update per 8.
    assert adapter.steps_taken == 8 and int(adapter.samples_seen) == 64


def test_steps_are_optimiser_steps_per_update():
    adapter = _adapter(steps=3)
    adapter(_frames(16))
    assert adapter.steps_taken == 6


def test_one_update_after_k_frames_at_batch_one():
    adapter = _adapter()
    trained = adapter.adapter_state_keys()
    before = _state(adapter)
    frames = _frames(8)
    for x in frames[:7].split(1):
        adapter(x)
    assert adapter.steps_taken == 0 and len(adapter.bank) > 0
    for k in trained:
        if not k.startswith(("bank.", "samples_seen")):
            assert torch.equal(adapter.state_dict()[k], before[k]), f"{k} moved before the update"
    teacher_before = {n: p.clone() for n, p in adapter.teacher.named_parameters()}
    adapter(frames[7:])
    assert adapter.steps_taken == 1
    after = adapter.state_dict()

    affine = [n for n, p in adapter.model.named_parameters() if p.requires_grad]
    assert affine and all(n.endswith(("weight", "bias")) and ".bn" in f".{n}" for n in affine)
    for n in affine:
        student = adapter.model.get_parameter(n).detach()
        assert not torch.equal(student, before[f"model.{n}"]), f"student {n} did not train"
        expected = teacher_before[n].lerp(student, 1 - 0.9)
        assert torch.equal(adapter.teacher.get_parameter(n), expected), f"teacher {n}"
    # Both networks' robust BN statistics moved toward the bank's (the student's on views).
    for net in ("model", "teacher"):
        assert not torch.equal(after[f"{net}.bn1.running_mean"], before[f"{net}.bn1.running_mean"])
    for k in after:
        if k not in trained:
            assert torch.equal(after[k], before[k]), f"frozen tensor {k} changed"


def test_predictions_are_the_teachers_and_vary():
    adapter = _adapter()
    frames = _frames(32)
    outputs = []
    for x in frames.split(1):
        with adapter.frozen():
            expected = adapter(x)
        with torch.no_grad():
            assert torch.equal(adapter.prediction_network()(x), expected)
        outputs.append(adapter(x))  # the prediction is the teacher's before this frame's update
        assert torch.equal(outputs[-1], expected)
    outputs = torch.cat(outputs)
    assert adapter.steps_taken == 4
    assert (outputs.std(dim=0) > 1e-3).all(), "predictions do not depend on the frame"
    assert all(
        not m.training for m in adapter.teacher.modules() if isinstance(m, StreamBatchNorm2d)
    )


def test_frozen_changes_nothing():
    adapter = _adapter()
    adapter(_frames(12))
    before = _state(adapter)
    with adapter.frozen():
        for x in _frames(16, seed=3).split(1):
            adapter(x)
    assert all(torch.equal(v, before[k]) for k, v in adapter.state_dict().items())
    assert adapter.steps_taken == 1


def test_adapter_state_holds_teacher_bank_and_counter_not_frozen_weights():
    adapter = _adapter()
    keys = set(adapter.adapter_state_dict())
    assert {"teacher.bn1.weight", "teacher.bn1.running_var", "model.bn1.running_mean"} <= keys
    assert {f"bank.{n}" for n in ("data", "labels", "uncertainty", "age", "occupied")} <= keys
    assert "samples_seen" in keys
    assert not any("conv" in k or "linear" in k for k in keys)


# ---- state -----------------------------------------------------------------------------------
@pytest.mark.parametrize("example", [True, False])  # False: the bank's shape follows the stream
def test_reset_returns_exactly_to_wrap_time(example):
    fresh, adapter = _adapter(example), _adapter(example)
    for x in _frames(20).split(1):
        adapter(x)
    assert adapter.steps_taken == 2
    adapter.reset()
    assert int(adapter.samples_seen) == 0 and len(adapter.bank) == 0
    for k, v in fresh.state_dict().items():
        assert torch.equal(adapter.state_dict()[k], v), k
    for x in _frames(16, seed=5).split(4):
        assert torch.equal(fresh(x), adapter(x))
    for k, v in fresh.state_dict().items():
        assert torch.equal(adapter.state_dict()[k], v), k


@pytest.mark.parametrize("batch", [1, 4])
def test_resume_goes_on_exactly(batch):
    batches = list(_frames(40).split(batch))
    cut = len(batches) // 2 + 1  # mid-way between updates: the counter and bank must travel
    straight = _adapter()
    expected = [straight(x) for x in batches]

    first = _adapter()
    for x in batches[:cut]:
        first(x)
    saved = _through_a_file(first.resume_state())
    second = _adapter(example=False)  # a new process, wrapped without an example input
    second.load_resume_state(saved)
    for x, y in zip(batches[cut:], expected[cut:], strict=True):
        assert torch.equal(second(x), y)
    for k, v in straight.state_dict().items():
        assert torch.equal(second.state_dict()[k], v), k
    assert second.steps_taken == straight.steps_taken == 5


def test_save_and_load_carry_the_bank(tmp_path):
    adapter = _adapter()
    adapter(_frames(12))
    adapter.save(tmp_path / "rotta.pt")
    other = _adapter(example=False)
    other.load(tmp_path / "rotta.pt")
    for k, v in adapter.adapter_state_dict().items():
        assert torch.equal(other.adapter_state_dict()[k], v), k
    x = _frames(4, seed=9)
    assert torch.equal(adapter(x), other(x))


def test_frames_of_another_shape_need_a_reset():
    adapter = _adapter()
    adapter(_frames(2))
    with pytest.raises(InputError, match="reset"):
        adapter(torch.randn(1, 3, 20, 20))
    adapter.reset()
    assert adapter(torch.randn(1, 3, 20, 20)).shape == (1, 10)


# ---- memory ----------------------------------------------------------------------------------
def test_memory_probe_measures_an_update_on_a_full_bank():
    adapter = _adapter()
    before = _state(adapter)
    small = measure_step_memory(adapter, (1, 3, 16, 16))
    assert small.gradients > 0 and small.saved_for_backward > 0, "the probe ran no update"
    # The update runs at the bank's batch whatever the stream's (8 frames: still one update).
    big = measure_step_memory(adapter, (8, 3, 16, 16))
    assert big.saved_for_backward == small.saved_for_backward
    assert all(torch.equal(v, before[k]) for k, v in adapter.state_dict().items())

    probe = copy.deepcopy(adapter)
    probe.prepare_memory_probe((1, 3, 20, 20))  # another frame shape than the bank's
    assert len(probe.bank) == 16 and probe.bank.class_counts().max() <= 2
    probe(torch.randn(1, 3, 20, 20))
    assert probe.steps_taken == 1


# ---- the bank --------------------------------------------------------------------------------
def _bank(capacity: int, classes: int, **kw) -> MemoryBank:
    return MemoryBank(capacity, classes, (1, 2, 2), **kw)


def _frame(i: float) -> torch.Tensor:
    return torch.full((1, 2, 2), float(i))


def test_bank_keeps_each_class_to_its_quota_under_a_class_sorted_stream():
    bank = _bank(10, 5)  # quota 2 per class
    for label in range(5):
        for i in range(20):  # one class after another, as a correlated stream gives them
            bank.add(_frame(i), label, 0.1)
            assert bank.class_counts()[label] <= 2
    assert bank.class_counts().tolist() == [2, 2, 2, 2, 2] and len(bank) == 10
    # Within each class the newest frames survived (same uncertainty: the oldest go first).
    assert sorted(bank.data[bank.labels == 4].flatten().unique().tolist()) == [18.0, 19.0]


def test_bank_fills_free_slots_then_takes_from_the_majority():
    bank = _bank(5, 2)  # quota 2.5: a class may hold 3
    for _ in range(3):
        bank.add(_frame(0), 0, 0.1)
    for _ in range(2):
        bank.add(_frame(1), 1, 0.1)
    assert bank.class_counts().tolist() == [3, 2] and len(bank) == 5
    oldest = int(bank.age.argmax())
    assert bank.labels[oldest] == 0
    assert bank.add(_frame(1), 1, 0.1)  # class 1 below quota, bank full: class 0 gives way
    assert bank.class_counts().tolist() == [2, 3] and bank.labels[oldest] == 1


def test_bank_evicts_the_most_uncertain_and_refuses_worse_frames():
    bank = _bank(2, 1)
    bank.add(_frame(0), 0, 0.0)
    bank.add(_frame(1), 0, 0.0)
    assert not bank.add(_frame(2), 0, 5.0)  # far more uncertain than what is held
    assert sorted(bank.data.flatten().unique().tolist()) == [0.0, 1.0]
    bank = _bank(4, 1, lambda_t=0.0)  # uncertainty alone
    for i, u in enumerate([0.2, 0.9, 0.5, 0.3]):
        bank.add(_frame(i), 0, u)
    assert bank.add(_frame(9), 0, 0.1)
    assert sorted(bank.uncertainty.tolist()) == pytest.approx([0.1, 0.2, 0.3, 0.5])


def test_bank_ages_and_weights():
    bank = _bank(4, 2)
    bank.add(_frame(0), 0, 0.1)
    bank.add(_frame(1), 1, 0.1)
    assert bank.age[bank.occupied].tolist() == [2, 1]
    assert torch.equal(bank.ages(), torch.tensor([0.5, 0.25]))
    assert torch.equal(bank.frames()[:, 0, 0, 0], torch.tensor([0.0, 1.0]))
    w = timeliness(torch.tensor([0.0, 0.5, 1.0]))
    assert w[0] == 0.5 and (w.diff() < 0).all()


# ---- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("robust_momentum", 0.0),
        ("robust_momentum", 1.5),
        ("teacher_momentum", 1.0),
        ("memory_size", 0),
        ("update_every", 0),
        ("lambda_t", -1.0),
        ("lambda_u", -0.5),
        ("input_mean", (0.5, 0.5, 0.5)),
    ],
)
def test_bad_config_values_raise(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        RoTTAConfig(**{field: value})


def test_bn_without_running_statistics_is_refused():
    torch.manual_seed(0)
    model = create_model("tiny_resnet")
    model.bn1.track_running_stats = False
    model.bn1.running_mean = model.bn1.running_var = None
    with pytest.raises(ConfigError, match="running statistics"):
        wrap(model, config_for("rotta"))
