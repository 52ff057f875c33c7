"""The bench and demo commands end to end (bench on ../shared's JPEG CIFAR-10 when present)."""

from __future__ import annotations

import json

import pytest

from edgeadapt._paths import shared_dir
from edgeadapt.cli import build_parser, main

ARCHIVE = shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
CHECKPOINT = shared_dir() / "models" / "resnet20_cifar10jpeg.pt"


def test_parsers_build():
    parser = build_parser()
    assert parser.parse_args(["demo"]).methods == "source,norm,tent,ecotta"
    args = parser.parse_args(["bench", "--protocol", "gradual", "--batch", "32"])
    assert args.protocol == "gradual" and args.batch == 32 and args.state_dir is None
    assert parser.parse_args(["bench", "--state-dir", "runs"]).state_dir == "runs"


@pytest.mark.skipif(
    not ARCHIVE.exists() or not CHECKPOINT.exists(),
    reason=f"shared CIFAR-10 data absent at {ARCHIVE}",
)
def test_bench_on_shared_data(tmp_path, capsys):
    def bench(out):
        return main([
            "bench", "--checkpoint", str(CHECKPOINT), "--methods", "source,norm", "--corruptions", "speckle_noise,saturate",
            "--n-images", "128", "--warmup-steps", "0", "--quiet", "--json", str(out), "--markdown", str(tmp_path / "r.md"),
            "--state-dir", str(tmp_path / "state"),
        ])  # fmt: skip

    assert bench(tmp_path / "r.json") == 0
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [r["method"] for r in rows] == ["source", "norm"]
    assert rows[0]["segments"][0]["images"] == 128
    assert "| norm |" in capsys.readouterr().out
    # The same command again finds every domain done and reports the same errors.
    assert bench(tmp_path / "again.json") == 0
    assert "after 2 of 2 segments" in capsys.readouterr().out
    again = json.loads((tmp_path / "again.json").read_text())["results"]
    assert [r["segments"] for r in again] == [r["segments"] for r in rows]


def test_bench_rejects_unknown_dataset(capsys):
    assert main(["bench", "--dataset", "imagenet-c"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_bench_rejects_overrides_that_are_not_a_json_object(capsys):
    assert main(["bench", "--model", "tiny_resnet", "--overrides", "{ecotta"]) == 2
    assert "--overrides is not JSON" in capsys.readouterr().err
    assert main(["bench", "--model", "tiny_resnet", "--overrides", "[1]"]) == 2
    assert "--overrides must be a JSON object" in capsys.readouterr().err


def test_bench_refuses_an_untrained_model(capsys):
    # Without weights every method errs at chance: a table of that would look like results.
    assert main(["bench", "--model", "tiny_resnet", "--quiet"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_bench_checks_counts_and_data_folder_before_loading(tmp_path, capsys):
    from edgeadapt.bench.cifar import run_cifar10c
    from edgeadapt.errors import ConfigError
    from edgeadapt.models import create_model

    model = create_model("tiny_resnet")
    for bad, said in [({"batch_size": 0}, "batch size"), ({"n_images": 0}, "n_images"),
                      ({"n_images": -5}, "n_images"), ({"warmup_steps": -1}, "warmup_steps")]:  # fmt: skip
        with pytest.raises(ConfigError, match=said):
            run_cifar10c(model, ["source"], corruptions=["fog"], release_dir=tmp_path, **bad)
    with pytest.raises(ConfigError, match="not a folder of CIFAR-10-C files"):
        run_cifar10c(model, ["source"], corruptions=["fog"], release_dir=tmp_path / "nope")


def test_bench_refuses_a_device_this_machine_lacks(tmp_path):
    import torch

    from edgeadapt.bench.runner import check_device
    from edgeadapt.errors import ConfigError

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a torch device name"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            check_device("cuda")
    else:
        with pytest.raises(ConfigError, match="CUDA devices"):
            check_device(f"cuda:{torch.cuda.device_count()}")
