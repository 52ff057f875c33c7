"""Memory accounting: a case computed by hand, and the lean path's savings. The step's peak
(phases, breakdown, recomputation) is in test_memory_peak.py, its fresh-process cross-check
in test_memory_rss.py, the lean ops' numerics in test_memory_lean.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from tiny import tiny_config
from torch import Tensor, nn

from edgeadapt.api import wrap
from edgeadapt.config import TentConfig
from edgeadapt.memory import analytic_step_memory, measure_step_memory
from edgeadapt.methods.base import Adapter
from edgeadapt.models import create_model


class _SquareLossAdapter(Adapter):
    """A trainable 1×1 conv and loss = mean(conv(x)²): autograd keeps exactly x (for the
    conv's weight gradient) and conv(x) (for the square)."""

    config_type = TentConfig

    def configure(self, model, example_input):
        return model.requires_grad_(True)

    def loss(self, x: Tensor):
        out = self.model(x)
        return out.pow(2).mean(), out.detach()


class _Pool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_measured_bytes_match_a_hand_count():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1, bias=False), nn.Flatten()
    )  # flatten is a view: no copy
    adapter = _SquareLossAdapter(
        model, TentConfig(optimizer="sgd", momentum=0.9), example_input=torch.zeros(2, 3, 4, 4)
    )
    m = measure_step_memory(adapter, (2, 3, 4, 4))
    assert m.saved_for_backward == 2 * 3 * 4 * 4 * 4 + 2 * 4 * 4 * 4 * 4  # x and conv(x), float32
    assert (
        m.trainable == m.gradients == m.optimizer_state == 3 * 4 * 4
    )  # 12 weights; SGD momentum: 1 slot
    assert m.frozen == 0


def test_analytic_model_matches_a_hand_count():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), _Pool(), nn.Linear(4, 2)
    )
    adapter = wrap(model, TentConfig(), example_input=torch.zeros(2, 3, 8, 8))
    a = analytic_step_memory(adapter, (2, 3, 8, 8))
    bn_input = (
        4 * 2 * 4 * 8 * 8 + 2 * 4 * 4
    )  # Tent's BN trains: its float input, batch mean, inv. std
    relu_mask = 2 * 4 * 8 * 8 // 8  # 1 bit per element
    softmax = 2 * 4 * 2 * 2  # log-probabilities and probabilities
    assert a.saved_for_backward == bn_input + relu_mask + softmax
    assert a.trainable == 4 * 8 and a.optimizer_state == 2 * 4 * 8  # Adam: two slots
    frozen_params = (3 * 4 * 9 + 4) + (4 * 2 + 2)
    assert a.frozen == 4 * frozen_params + 4 * (4 + 4) + 8  # running mean/var + num_batches_tracked


def test_lean_tent_matches_the_analytic_model():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        _Pool(),
        nn.Linear(4, 2),
    )
    # A batch of stat_window samples or more: the BNs normalise with its own statistics, as the
    # planning model assumes (smaller batches mix in the stream's, which keeps a few more
    # per-channel vectors).
    config = TentConfig(lean=True, stat_window=8)
    adapter = wrap(model, config, example_input=torch.zeros(2, 3, 8, 8))
    measured = measure_step_memory(adapter, (8, 3, 8, 8)).saved_for_backward
    analytic = analytic_step_memory(adapter, (8, 3, 8, 8)).saved_for_backward
    assert measured == analytic


def test_ecotta_keeps_a_fraction_of_what_tent_and_cotta_keep():
    # What autograd keeps between forward and backward on ResNet-20 (<= 50% of Tent, <= 25% of
    # CoTTA); the ratios barely depend on the batch, so a small one keeps the test fast. The
    # step's peak is test_memory_peak.py's.
    model = create_model("resnet20")
    shape = (4, 3, 32, 32)
    kept = {
        m: measure_step_memory(wrap(model, tiny_config(m)), shape).adaptation
        for m in ("tent", "cotta", "ecotta")
    }
    assert kept["ecotta"] <= 0.5 * kept["tent"]
    assert kept["ecotta"] <= 0.25 * kept["cotta"]


def test_measuring_leaves_the_adapter_untouched(tiny_model, example):
    adapter = wrap(tiny_model, tiny_config("ecotta"), example_input=example)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    measure_step_memory(adapter, (4, 3, 16, 16))
    for k, v in adapter.state_dict().items():
        assert torch.equal(v, before[k])
    assert adapter.steps_taken == 0


@pytest.mark.parametrize("method", ["source", "norm"])
def test_no_backward_no_kept_bytes(method, tiny_model):
    m = measure_step_memory(wrap(tiny_model, tiny_config(method)), (4, 3, 16, 16))
    assert m.saved_for_backward == 0 and m.gradients == 0 and m.peak_step > 0


def test_cli_memory_writes_json(tmp_path):
    out = tmp_path / "mem.json"
    cmd = [
        sys.executable,
        "-m",
        "edgeadapt.cli",
        "memory",
        "--model",
        "tiny_resnet",
        "--methods",
        "source,tent,ecotta",
        "--batch",
        "4",
        "--json",
        str(out),
        "--no-rss",  # test_memory_rss.py measures that
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| ecotta |" in result.stdout
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["source", "tent", "ecotta"]
    assert rows[2]["peak_vs_tent"] < 1.0 and "rss_vs_tent" not in rows[2]
    assert {"forward", "backward", "recompute"} <= set(rows[2]["measured"]["peak_phases"])
    assert "| ecotta |" in result.stdout and "peak in" in result.stdout


def test_cli_reports_unknown_model():
    cmd = [sys.executable, "-m", "edgeadapt.cli", "memory", "--model", "resnet21"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "did you mean" in result.stderr
