"""EcoTTA at frame sizes its stages do not divide (27×45: a stride-2 stage maps 27 to 14): the
meta conv's stride is read as ceil(input / stride), the arithmetic of the part's own strided
convs, so the adapter builds, adapts and streams at any size."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_config

from edgeadapt.api import wrap
from edgeadapt.cli import main
from edgeadapt.errors import PartitionError
from edgeadapt.modules import MetaPart
from edgeadapt.modules.partition import resolve_parts


@pytest.mark.parametrize("size", [(27, 45), (13, 7)])
def test_ecotta_adapts_at_sizes_the_stages_do_not_divide(tiny_net, size):
    torch.manual_seed(0)
    x = torch.randn(8, 3, *size)
    adapter = wrap(tiny_net, tiny_config("ecotta"), example_input=x)
    parts = [m for m in adapter.model.modules() if isinstance(m, MetaPart)]
    assert [p.adapter_conv.conv.stride for p in parts] == [(1, 1), (2, 2), (2, 2)]
    frozen = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    before = {k: v.clone() for k, v in adapter.adapter_state_dict().items()}
    for _ in range(3):
        logits = adapter(x)
    assert logits.shape == (8, 10) and bool(torch.isfinite(logits).all())
    assert float(logits.std(0).mean()) > 0  # predictions vary across frames
    after = adapter.adapter_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the adapter moved
    for k, v in tiny_net.state_dict().items():  # the caller's model did not
        torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)


def test_a_part_no_stride_can_match_is_still_refused():
    class Crop(torch.nn.Module):  # 32 -> 20: ceil(32 / s) is never 20
        def forward(self, x):
            return x[:, :, :20, :20]

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), Crop())
    with pytest.raises(PartitionError, match="no stride"):
        resolve_parts(model, ["1"], torch.randn(1, 3, 32, 32))


def test_stream_adapts_with_ecotta_at_an_odd_size(mp4, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.json"
    code = main(["stream", str(mp4), "--model", "tiny_resnet", "--checkpoint",
                 str(tiny_checkpoint), "--size", "27x45", "--delta", "--adapt", "ecotta",
                 "--no-warmup", "--adapt-batch", "4", "--json", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["adaptation"]["steps"] == 3 and report["settings"]["size"] == [27, 45]
