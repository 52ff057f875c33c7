"""Pretrained weights: fetched once into a cache, checked by sha256, never half-written.

Downloads go to file:// URLs under tmp_path; the internet is never reached.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

from edgeadapt._paths import SHARED_ENV, shared_dir
from edgeadapt.data.errors import DownloadError
from edgeadapt.errors import CheckpointMismatchError, ConfigError, UnknownNameError
from edgeadapt.models import create_model, list_pretrained, load_checkpoint
from edgeadapt.models import pretrained as pt
from edgeadapt.models.errors import NoPretrainedWeightsError, WeightsChecksumError

SHARED_MODELS = shared_dir() / "models"  # read before any test points the variable elsewhere


@pytest.fixture
def env(monkeypatch, tmp_path) -> Path:
    """An empty cache and shared folder, no mirror, and a table the test may add rows to."""
    monkeypatch.setenv(pt.WEIGHTS_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "shared"))
    monkeypatch.delenv(pt.WEIGHTS_URL_ENV, raising=False)
    monkeypatch.setattr(pt, "_PRETRAINED", dict(pt._PRETRAINED))
    return tmp_path / "cache"


@pytest.fixture
def tiny_weights(env, tmp_path) -> tuple[pt.PretrainedWeights, dict[str, torch.Tensor]]:
    """A table row for tiny_resnet whose file sits behind a file:// URL."""
    torch.manual_seed(5)
    state = create_model("tiny_resnet").state_dict()
    served = tmp_path / "served"
    served.mkdir()
    torch.save(state, served / "tiny.pt")
    weights = pt.register_pretrained(
        pt.PretrainedWeights(
            model="tiny_resnet",
            file_name="tiny.pt",
            url=(served / "tiny.pt").as_uri(),
            sha256=hashlib.sha256((served / "tiny.pt").read_bytes()).hexdigest(),
            max_bytes=1 << 20,
        )
    )
    return weights, state


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_downloads_once_then_uses_the_verified_cache(tiny_weights, env, tmp_path, capsys):
    _, state = tiny_weights
    model = create_model("tiny_resnet", pretrained=True)
    assert _same(model.state_dict(), state)
    cached = env / "tiny.pt"
    assert cached.is_file() and [p.name for p in env.iterdir()] == ["tiny.pt"]  # no temp left
    assert "tiny.pt" in capsys.readouterr().err  # the progress bar
    # The source is gone: the second model comes from the cache, re-hashed, without a fetch.
    (tmp_path / "served" / "tiny.pt").unlink()
    assert _same(create_model("tiny_resnet", pretrained=True).state_dict(), state)
    assert pt.fetch_pretrained("tiny_resnet", progress=False) == cached


def test_the_bar_shows_the_total_from_content_length(tiny_weights, capsys):
    pt.fetch_pretrained("tiny_resnet", progress=True)
    assert "100%" in capsys.readouterr().err  # a percentage needs the total


def test_a_corrupted_cache_is_detected_and_fetched_again(tiny_weights, env):
    weights, state = tiny_weights
    pt.fetch_pretrained("tiny_resnet", progress=False)
    cached = env / "tiny.pt"
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    with pytest.warns(UserWarning, match="damaged"):
        model = create_model("tiny_resnet", pretrained=True)
    assert _same(model.state_dict(), state)
    assert pt.sha256_file(cached) == weights.sha256


def test_a_corrupted_cache_with_no_good_source_is_refused_and_deleted(tiny_weights, env, tmp_path):
    pt.fetch_pretrained("tiny_resnet", progress=False)
    (env / "tiny.pt").write_bytes(b"not weights")
    (tmp_path / "served" / "tiny.pt").write_bytes(b"not weights either")
    with pytest.warns(UserWarning, match="damaged"), pytest.raises(WeightsChecksumError):
        create_model("tiny_resnet", pretrained=True)
    assert not list(env.iterdir())


def test_a_wrong_hash_refuses_and_leaves_no_file(tiny_weights, env, monkeypatch):
    weights, _ = tiny_weights
    wrong = pt.PretrainedWeights(
        model="tiny_resnet", file_name="tiny.pt", url=weights.url, sha256="0" * 64
    )
    monkeypatch.setitem(pt._PRETRAINED, "tiny_resnet", wrong)
    with pytest.raises(WeightsChecksumError, match="sha256") as info:
        create_model("tiny_resnet", pretrained=True)
    assert isinstance(info.value, CheckpointMismatchError)
    assert not env.exists() or not list(env.iterdir())


def test_a_download_over_the_size_bound_is_refused_and_leaves_no_file(
    tiny_weights, env, monkeypatch
):
    weights, _ = tiny_weights
    small = pt.PretrainedWeights(
        model="tiny_resnet", file_name="tiny.pt", url=weights.url, sha256=weights.sha256,
        max_bytes=100,
    )  # fmt: skip
    monkeypatch.setitem(pt._PRETRAINED, "tiny_resnet", small)
    with pytest.raises(DownloadError, match="100 bytes"):
        pt.fetch_pretrained("tiny_resnet", progress=False)
    assert not env.exists() or not list(env.iterdir())


def test_an_unreachable_url_says_how_to_use_a_mirror(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv(pt.WEIGHTS_URL_ENV, (tmp_path / "empty").as_uri() + "/")
    with pytest.raises(DownloadError, match=pt.WEIGHTS_URL_ENV):
        pt.fetch_pretrained("tiny_resnet", progress=False)


def test_a_mirror_given_as_a_folder_path_or_url(tiny_weights, tmp_path, monkeypatch):
    weights, state = tiny_weights
    mirror = tmp_path / "mirror dir"  # a space: the URL must quote it
    mirror.mkdir()
    (tmp_path / "served" / "tiny.pt").rename(mirror / "tiny.pt")
    monkeypatch.setenv(pt.WEIGHTS_URL_ENV, str(mirror))
    assert pt.weights_url(weights) == (mirror / "tiny.pt").as_uri()
    assert _same(create_model("tiny_resnet", pretrained=True).state_dict(), state)


def test_pretrained_and_checkpoint_together_are_refused(tiny_weights, tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        create_model("tiny_resnet", pretrained=True, checkpoint=tmp_path / "x.pt")


def test_other_num_classes_than_the_weights_is_refused(tiny_weights, env):
    with pytest.raises(ConfigError, match="10 classes"):
        create_model("tiny_resnet", num_classes=3, pretrained=True)
    assert not env.exists()  # refused before any download


def test_unknown_models_and_models_without_weights_are_refused(env):
    with pytest.raises(UnknownNameError, match="did you mean 'resnet20'"):
        create_model("resnet21", pretrained=True)
    with pytest.raises(NoPretrainedWeightsError, match=r"that have them: \['resnet20'\]") as info:
        create_model("resnet32", pretrained=True)
    assert isinstance(info.value, UnknownNameError)
    assert list_pretrained() == ["resnet20"]


def test_the_table_refuses_bad_rows(env):
    good = {"model": "resnet8", "file_name": "r8.pt", "url": "file:///x", "sha256": "a" * 64}
    for bad in ({"file_name": "../r8.pt"}, {"file_name": ".hidden"}, {"sha256": "xyz"}):
        with pytest.raises(ConfigError):
            pt.register_pretrained(pt.PretrainedWeights(**{**good, **bad}))
    with pytest.raises(UnknownNameError):
        pt.register_pretrained(pt.PretrainedWeights(**{**good, "model": "nope"}))
    with pytest.raises(ConfigError, match="already"):
        pt.register_pretrained(pt.PretrainedWeights(**{**good, "model": "resnet20"}))


def test_the_resnet20_row_is_the_shared_checkpoint():
    weights = pt.get_pretrained("resnet20")
    assert weights.file_name == "resnet20_cifar10jpeg.pt"
    assert weights.url == pt.RELEASE_URL + weights.file_name
    shared = SHARED_MODELS / weights.file_name
    if shared.is_file():
        assert pt.sha256_file(shared) == weights.sha256


def _shared_resnet20() -> Path:
    path = SHARED_MODELS / "resnet20_cifar10jpeg.pt"
    if not path.is_file():
        pytest.skip(f"shared checkpoint {path} absent (set {SHARED_ENV} to its directory)")
    return path


def test_resnet20_pretrained_through_a_file_mirror_equals_the_shared_file(env, monkeypatch):
    path = _shared_resnet20()
    monkeypatch.setenv(pt.WEIGHTS_URL_ENV, SHARED_MODELS.as_uri() + "/")
    model = create_model("resnet20", pretrained=True)
    assert (env / path.name).is_file()  # downloaded into the tmp cache, not read in place
    expected = load_checkpoint(create_model("resnet20"), path).state_dict()
    assert _same(model.state_dict(), expected)


def test_resnet20_in_the_shared_folder_is_used_in_place(env, monkeypatch):
    path = _shared_resnet20()
    monkeypatch.setenv(SHARED_ENV, str(SHARED_MODELS.parent))
    monkeypatch.setenv(pt.WEIGHTS_URL_ENV, "file:///nonexistent/")  # a download would fail
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pt.fetch_pretrained("resnet20", progress=False) == path
    assert not env.exists()
