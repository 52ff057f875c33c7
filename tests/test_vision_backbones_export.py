"""A torchvision and a timm backbone through the whole path: wrap, adapt at batch 1, export
the adapted prediction as an ExecuTorch program verified against eager.

PyPI's torchvision (and so timm) is built against PyPI's CUDA torch and does not import with
the CPU build the main CI environment uses: these run in CI's own vision environment
(`.ci/run`: torch 2.13.0+cu130 from PyPI, on the CPU), and skip elsewhere.
"""

from __future__ import annotations

import os

import pytest
import torch

from edgeadapt.api import wrap
from edgeadapt.config import EcoTTAConfig
from edgeadapt.models import create_model


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except (ImportError, RuntimeError):  # a torchvision for another torch: RuntimeError
        return False
    return True


@pytest.mark.parametrize("name", ["tv_mobilenet_v2", "timm_mobilenetv3_small"])
def test_wrap_adapt_export(name, tmp_path):
    library = "timm" if name.startswith("timm_") else "torchvision"
    if not _importable(library):
        message = f"{library} does not import with torch {torch.__version__}"
        if os.environ.get("EDGEADAPT_REQUIRE_VISION"):  # set in CI's vision environment
            pytest.fail(message)
        pytest.skip(f"{message} (CI's vision environment runs this)")
    pytest.importorskip("executorch", reason="export extra not installed")
    from edgeadapt.export import to_executorch

    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    frames = torch.rand(6, 1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    # Untrained weights predict near-uniformly, which the entropy filter rightly rejects:
    # margin 1 keeps every frame, so the steps are taken.
    adapter = wrap(model, EcoTTAConfig(entropy_margin=1.0), example_input=frames[0])
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    outs = [adapter(x) for x in frames]  # one frame per step, as a device sees them
    assert all(o.shape == (1, 10) and torch.isfinite(o).all() for o in outs)
    moved = [n for n, p in adapter.named_parameters() if p.requires_grad
             and not torch.equal(p, before[n])]  # fmt: skip
    assert moved, "no meta-network weight moved at batch 1"
    trained = set(adapter.adapter_state_keys())
    frozen_same = all(torch.equal(v, before[k]) for k, v in adapter.state_dict().items()
                      if k not in trained)  # fmt: skip
    assert frozen_same, "a frozen backbone tensor changed"
    report = to_executorch(adapter, frames[0], tmp_path / f"{name}.pte", backend="portable")
    assert report.path.is_file() and report.file_bytes > 0
    assert report.max_abs_error < 1e-3  # verified against the eager adapter when written
